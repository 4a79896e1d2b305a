"""ContainerEngine and Container: the one place where the layers are wired together.

Config (validated) -> profile -> template -> plan -> launch. Everything that can be
refused is refused before anything is created; anything created on the way is
removed again if a later step fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar, cast

from codex32._cgroups.containers import ContainerCgroups, ContainerStats
from codex32._images.templates import Template, TemplateStore
from codex32._network.manager import NetworkCollection, Networking
from codex32._plan.plan import ContainerPaths, Plan, Step, build_plan
from codex32._plan.profiles import Profile, resolve_profile
from codex32._runtime.faults import point as fault_point
from codex32._runtime.launch import (
    MONITOR_ENV,
    ExitStatus,
    FileArg,
    ForkServer,
    Launch,
    run_exec,
    take_prestarted_fork_server,
)
from codex32._store.events import Event, EventHooks, EventWatcher, follow_events, read_events
from codex32._store.logs import LogEntry
from codex32._store.state import (
    REMOVING_PREFIX,
    ContainerRecord,
    ContainerState,
    StateStore,
    is_same_process,
    storage_error,
)
from codex32.config.container import ContainerConfig, signal_name
from codex32.config.images import ContainerImage
from codex32.config.network import HOST, resolve_network
from codex32.errors import (
    CgroupError,
    Codex32Error,
    ConfigError,
    ContainerError,
    ContainerNotFoundError,
    ImageError,
    LaunchError,
    NetworkError,
    StateError,
)
from codex32.settings import Settings


@dataclass(frozen=True)
class RunResult:
    """What ``containers.run`` returns: the exit code and, when captured, the output."""

    exit_code: int
    output: bytes = b""
    error_output: bytes = b""
    container_id: str = ""

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.exit_code == 0


log = logging.getLogger("codex32")
T = TypeVar("T")
_LIVE = (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)


@dataclass(frozen=True)
class ExecResult:
    """What ``exec_run`` returns (docker-py's ``exit_code`` and ``output``)."""

    exit_code: int
    output: bytes = b""
    error_output: bytes = b""


class Container:
    """A handle on one container (docker-py's shape: ``.id``, ``.name``, ``.state``).

    Every verb first refreshes the state from the kernel (is PID 1 still the process
    recorded, by pid and start time?), then checks that the verb is allowed.
    """

    def __init__(self, engine: ContainerEngine, record: ContainerRecord) -> None:
        self._engine = engine
        self._record = record

    def __repr__(self) -> str:
        return f"<Container {self.short_id} {self.name} {self.state.value}>"

    @property
    def id(self) -> str:
        """The 64-hex-digit id."""
        return self._record.id

    @property
    def short_id(self) -> str:
        """The first 12 digits, as Docker shows them."""
        return self._record.id[:12]

    @property
    def name(self) -> str:
        """The container's name."""
        return self._record.name

    @property
    def state(self) -> ContainerState:
        """The state as last refreshed."""
        return self._record.status

    @property
    def status(self) -> str:
        """The state's name (docker-py's ``.status``)."""
        return self._record.status.value

    @property
    def record(self) -> ContainerRecord:
        """The full state record."""
        return self._record

    @property
    def config(self) -> ContainerConfig:
        """What the container was created from."""
        stored = self._engine._store.load_config(self.id)
        return ContainerConfig.model_validate(stored, context={"stored": True})

    def reload(self) -> None:
        """Re-read the state, checked against the kernel."""
        self._record = self._engine._refresh(self.id)

    def start(self, *, restarting: bool = False) -> None:
        """Start a created or exited container, detached; return once it runs."""
        self._engine._start(self, restarting=restarting)

    def stop(self, timeout: float | None = None) -> None:
        """Send the stop signal, then SIGKILL after ``timeout`` seconds (a no-op if not running)."""
        self._engine._stop(self, timeout)

    def kill(self, signal_: str | int = "SIGKILL") -> None:
        """Send a signal to the container's PID 1."""
        self._engine._kill(self, signal_)

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running), then start; an ``--rm`` container is kept meanwhile, as
        Docker's restart keeps it."""
        self._engine._keep_through_restart(self)
        self.stop(timeout)
        self.start()
        self._engine._event(self, "restart")

    def wait(self, timeout: float | None = None) -> int:
        """Block until the container is not running; return its exit code."""
        return self._engine._wait(self, timeout)

    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | None = None,
        since: float | None = None,
        timestamps: bool = False,
    ) -> bytes:
        """The container's output so far, as docker-py's ``logs()``."""
        from codex32._store.logs import format_entry, read_logs

        streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        entries = read_logs(self._engine._log_path(self.id), tail=tail, since=since,
                            until=None, streams=streams)  # fmt: skip
        return "".join(format_entry(e, timestamps) for e in entries).encode()

    def stream_logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = True,
    ) -> Iterator[LogEntry]:
        """Log entries as they come (survives rotation); ends when the container stops."""
        from codex32._store.logs import follow_logs, read_logs

        streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        path = self._engine._log_path(self.id)
        if not follow:
            return read_logs(path, tail=tail, since=since, until=None, streams=streams)

        checked = [0.0]

        def stopped() -> bool:
            # Asked on every read: while output flows, look at the state at most
            # every 0.2 s (a reload reads state.json and asks the kernel).
            now = time.monotonic()
            if now - checked[0] < 0.2:
                return False
            checked[0] = now
            self._engine._reload_or_removed(self)  # an --rm container may be gone at once
            return self.state not in _LIVE

        return follow_logs(path, since=since, tail=tail, streams=streams, stop=stopped)

    def exec_run(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
        tty: bool = False,
    ) -> ExecResult:
        """Run ``command`` inside the running container, confined as its command is.

        Output is captured and returned unless file descriptors are given. ``tty``: the
        command gets a pseudo-terminal (its controlling terminal), relayed to
        ``stdin``/``stdout``; its output is then one stream, as ``docker exec -t``.
        """
        return self._engine._exec(
            self, command, env or {}, user, workdir, stdin, stdout, stderr, tty
        )

    def pause(self) -> None:
        """Freeze every process of the container (cgroup freezer)."""
        self._engine._pause(self, True)

    def unpause(self) -> None:
        """Thaw a paused container."""
        self._engine._pause(self, False)

    resume = unpause

    def network_settings(self) -> dict[str, object]:
        """Network mode, address, gateway, published ports, rate limits (for inspect)."""
        return self._engine._networking.settings(self.id, self.config)

    def stats(self) -> ContainerStats:
        """A sample of CPU, memory, pids, block I/O and network counters."""
        return self._engine._stats(self)

    def top(self) -> list[dict[str, object]]:
        """The container's processes (host pids), as ``docker top``."""
        return self._engine._top(self)

    def export(self, path: str | os.PathLike[str]) -> None:
        """Write the container's filesystem to ``path`` as a tar (``docker export``)."""
        self._engine._export(self, Path(path))

    def remove(self, *, force: bool = False) -> None:
        """Delete the container (``force`` kills it first if it runs)."""
        self._engine._remove(self, force)


class ContainerCollection:
    """``engine.containers``: create, run, get, list."""

    def __init__(self, engine: ContainerEngine) -> None:
        self._engine = engine

    def create(self, config: ContainerConfig) -> Container:
        """Create a container (its directory, layers and record); do not start it."""
        return self._engine._create(config)

    def run(
        self,
        config: ContainerConfig,
        *,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
        forward_signals: bool = False,
    ) -> RunResult:
        """Create, start and wait for a container; return its exit code and output.

        The output is always captured in the container's log and returned; pass file
        descriptors (the CLI passes its own) to also stream it live. Failures to set
        up or execute raise ``LaunchError`` (exit code 125/126/127).
        """
        container = self.create(config)
        return self._engine._run_attached(
            container, stdin=stdin, stdout=stdout, stderr=stderr,
            forward_signals=forward_signals,
        )  # fmt: skip

    def run_detached(self, config: ContainerConfig) -> Container:
        """Create and start a container in the background; return it running."""
        container = self.create(config)
        try:
            container.start()
        except BaseException:
            if config.auto_remove:
                container.remove(force=True)
            raise
        return container

    def prune(self) -> list[str]:
        """Remove every container that is not running; return their ids."""
        removed = []
        for container in self.list(all=True):
            if container.state in (ContainerState.EXITED, ContainerState.CREATED):
                with contextlib.suppress(Codex32Error):
                    container.remove()
                    removed.append(container.id)
        return removed

    def get(self, name_or_id: str) -> Container:
        """Look a container up by name, id or unique id prefix."""
        store = self._engine._store
        return Container(self._engine, self._engine._refresh(store.resolve(name_or_id)))

    def list(self, *, all: bool = False) -> list[Container]:
        """Running containers, or every container with ``all=True``."""
        store = self._engine._store
        containers = []
        for container_id in store.ids():
            try:
                record = self._engine._refresh(container_id)
            except Codex32Error:
                continue
            if all or record.status in _LIVE:
                containers.append(Container(self._engine, record))
        return sorted(containers, key=lambda c: c.record.created_at)


class ImageCollection:
    """``engine.images``: the rootfs templates."""

    def __init__(self, engine: ContainerEngine) -> None:
        self._templates = engine._templates

    def list(self) -> list[ContainerImage]:
        """Every template, built or not."""
        return [self.get(name) for name in self._templates.names()]

    def get(self, name: str) -> ContainerImage:
        """One template's description."""
        template = self._templates.get(name)
        return ContainerImage(
            name=template.name,
            description=template.description,
            built=self._templates.is_built(template),
            path=str(self._templates.rootfs(template)),
            recipe=str(template.recipe_dir),
            command=list(template.command),
        )

    def build(self, name: str, *, quiet: bool = False) -> ContainerImage:
        """(Re)build a template from its recipe."""
        self._templates.build(self._templates.get(name), quiet=quiet)
        return self.get(name)


class ContainerEngine:
    """The engine: containers and images under one storage directory."""

    def __init__(
        self,
        storage_dir: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        fork_server: bool = True,
    ) -> None:
        """``fork_server``: start containers' monitors from a warm launcher process
        (started on first use, or adopted from ``prestart_fork_server``, as the CLI
        does); off, each monitor is a fresh interpreter."""
        self.settings = settings or Settings.from_env(storage_dir)
        self._fork_server = (take_prestarted_fork_server() or ForkServer()) if fork_server else None
        self._store = StateStore(self.settings.storage_dir)
        self._templates = TemplateStore(self.settings.templates_dir, self.settings.storage_dir)
        self._cgroups = ContainerCgroups(self.settings.cgroup_parent)
        self._networking = Networking(self.settings.storage_dir, self._store)
        self.containers = ContainerCollection(self)
        self.images = ImageCollection(self)
        self.networks = NetworkCollection(self._networking)
        self._hooks: EventHooks | None = None
        self._watcher: EventWatcher | None = None
        self._watch_lock = threading.Lock()

    # -- events ----------------------------------------------------------------

    @property
    def _events_path(self) -> Path:
        return self.settings.storage_dir / "events.jsonl"

    def on(self, action: str, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every ``action`` event ("die", "start", "*", ...).

        Events written by any process count (the monitor records a container's
        death), so a thread follows the events file from the first ``on`` until
        ``close()``; callbacks run in that thread.
        """
        with self._watch_lock:
            if self._hooks is None:
                self._hooks = EventHooks()
            self._hooks.on(action, callback)
            if self._watcher is None:
                self._store.ensure_layout()
                self._watcher = EventWatcher(self._events_path, self._hooks)
                self._watcher.start()

    def off(self, action: str, callback: Callable[[Event], None]) -> None:
        """Stop calling ``callback`` for ``action``."""
        if self._hooks is not None:
            self._hooks.off(action, callback)

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        filters: dict[str, list[str]] | None = None,
        follow: bool = False,
    ) -> Iterator[Event]:
        """Past events (and with ``follow``, new ones as they come), as Docker's filters."""
        if follow:
            return follow_events(self._events_path, since=since, filters=filters,
                                 stop=lambda: False)  # fmt: skip
        return read_events(self._events_path, since=since, until=until, filters=filters)

    def __enter__(self) -> ContainerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the event-hook thread and the launcher, if any. Containers keep running."""
        with self._watch_lock:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
        if self._fork_server is not None:
            self._fork_server.close()

    # -- compile -------------------------------------------------------------

    def profile(self, config: ContainerConfig) -> Profile:
        """The isolation profile a config resolves to."""
        return resolve_profile(
            config,
            userns_uid_base=self.settings.userns_uid_base,
            userns_size=self.settings.userns_size,
        )

    def plan(self, config: ContainerConfig, container_id: str = "0" * 64) -> Plan:
        """The set-up plan for ``config`` (nothing is created; templates may be built)."""
        config = _script_image(config)
        template = self._templates.get(config.image)
        profile = self.profile(config)
        return self._plan(container_id, config, profile, template, lower=self._lower(template))

    def _plan(
        self,
        container_id: str,
        config: ContainerConfig,
        profile: Profile,
        template: Template,
        lower: Path,
    ) -> Plan:
        directory = self._store.directory(container_id)
        paths = ContainerPaths(
            rootfs=str(directory / "rootfs"),
            upper=str(directory / "upper"),
            work=str(directory / "work"),
            lower=(str(lower),),
        )
        program = None
        if profile.seccomp:
            from codex32._plan.seccomp_cache import default_program

            program = str(default_program(self.settings.storage_dir, profile.capabilities))
        return build_plan(
            config.name or container_id[:12],
            config,
            profile,
            template.image_config(),
            paths,
            hostname=config.hostname or container_id[:12],
            seccomp_program=program,
            network_files=self._networking.files(container_id, profile.network),
        )

    def _lower(self, template: Template, profile: Profile | None = None) -> Path:
        if profile is not None and profile.userns:
            return self._templates.shifted_rootfs(template, self.settings.userns_uid_base)
        return self._templates.rootfs(template)

    # -- create --------------------------------------------------------------

    def _create(self, config: ContainerConfig) -> Container:
        _require_root()
        config, warnings = self._enforceable(_script_image(config))
        template = self._templates.get(config.image)
        profile = self.profile(config)
        self._store.ensure_layout()
        if profile.userns:
            _check_traversable(self.settings.storage_dir, self.settings.userns_uid_base)
        self._templates.ensure_built(template)
        lower = self._lower(template, profile)
        container_id = secrets.token_hex(32)
        name = config.name or container_id[:12]
        directory = self._store.directory(container_id)
        record = ContainerRecord(id=container_id, name=name, image=config.image, warnings=warnings)
        # The directory first, then the name: a name never points at nothing. The
        # operation lock marks the creation as under way until state.json exists, so a
        # concurrent init_engine()'s reconcile leaves the half-made directory alone.
        try:
            directory.mkdir(mode=0o711)
        except OSError as exc:
            raise storage_error(exc, directory) from exc
        try:
            with self._store.operation(container_id):
                self._store.reserve_name(name, container_id)
                os.chmod(directory, 0o711)
                for sub in ("upper", "work", "rootfs"):
                    (directory / sub).mkdir(mode=0o755)
                if profile.userns:
                    base = self.settings.userns_uid_base
                    for sub in ("upper", "work"):
                        os.chown(directory / sub, base, base)
                self._store.save_config(container_id, config.model_dump(mode="json"))
                fault_point("create.config")
                hostname = config.hostname or container_id[:12]
                self._networking.prepare(container_id, name, hostname, config, profile.network)
                plan = self._plan(container_id, config, profile, template, lower)
                (directory / "plan.json").write_text(plan.describe())
                self._store.save(record)
        except BaseException as exc:
            with contextlib.suppress(Codex32Error, OSError):  # (reconcile frees a lease left)
                self._networking.release(container_id)
            self._store.delete(record)
            if isinstance(exc, OSError):  # a full disk, most often
                raise storage_error(exc, directory) from exc
            raise
        container = Container(self, record)
        self._event(container, "create")
        return container

    def _enforceable(self, config: ContainerConfig) -> tuple[ContainerConfig, list[str]]:
        """Refuse limits the host cannot enforce, or drop them with a warning each when
        the config asks for best effort; --memory falls back to RLIMIT_AS.

        Returns the config to create and the warnings (kept in the record, logged).
        """
        missing = self._cgroups.missing_controllers(config.resources)
        if not missing:
            return config, []
        warnings: list[str] = []
        best_effort = config.resources.best_effort
        memory_only = set(missing) == {"memory_bytes"}
        has_as = any(u.name == "as" for u in config.ulimits)
        if "memory_bytes" in missing and (memory_only or best_effort) and not has_as:
            from codex32.config.container import Ulimit

            size = config.resources.memory_bytes or 0
            warnings.append(
                "no memory cgroup controller on this host: --memory is enforced per process "
                f"with RLIMIT_AS={size} instead (a container's processes together may use more)"
            )
            config = config.model_copy(
                update={
                    "ulimits": [*config.ulimits, Ulimit(name="as", soft=size, hard=size)],
                    "resources": config.resources.model_copy(update={"memory_bytes": None}),
                }
            )
            del missing["memory_bytes"]
        reason = self._cgroups.unavailable or "the controller is not available"
        if missing and best_effort:
            dropped: dict[str, object] = {}
            for name, controller in sorted(missing.items()):
                dropped[name] = [] if isinstance(getattr(config.resources, name), list) else None
                warnings.append(f"{name} is not enforced (best effort): no {controller} "
                                f"controller: {reason}")  # fmt: skip
            config = config.model_copy(
                update={"resources": config.resources.model_copy(update=dropped)}
            )
        elif missing:
            fields = ", ".join(f"{f} (needs {c})" for f, c in sorted(missing.items()))
            raise CgroupError(
                f"this host cannot enforce {fields}: {reason}",
                hint="drop the limit, enable the controller for the engine's cgroup, "
                "or ask for best effort (--limits best-effort)",
            )
        for warning in warnings:
            log.warning("%s", warning)
        return config, warnings

    # -- lifecycle -------------------------------------------------------------

    def _log_path(self, container_id: str) -> Path:
        return self._store.directory(container_id) / "container.log"

    def _event(self, container: Container, action: str, **attributes: str) -> None:
        from codex32._store.events import Event, append_event

        event = Event(
            time=time.time(), type="container", action=action, id=container.id,
            name=container.name, attributes=attributes,
        )  # fmt: skip
        with contextlib.suppress(OSError):
            append_event(self.settings.storage_dir / "events.jsonl", event)

    def _refresh(self, container_id: str) -> ContainerRecord:
        """The record, corrected by what the kernel says (pid alive and the same?).

        A live record whose PID 1 is gone while its monitor lives is being written
        down: give the monitor a moment. It may then move on to RESTARTING, or to a new
        PID 1, as well as to EXITED; each is judged afresh, and only a record that
        stays orphaned (no PID 1, no monitor) is marked as lost.
        """
        deadline = time.monotonic() + 2
        while True:
            record = self._store.load(container_id)
            verdict = _liveness(record)
            if verdict != "settling" or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if verdict != "orphaned":
            return record

        def lost(r: ContainerRecord) -> None:
            if _liveness(r) == "orphaned":  # judged again under the state lock
                r.status = ContainerState.EXITED
                r.exit_code = r.exit_code if r.exit_code is not None else 255
                r.finished_at = r.finished_at or time.time()
                r.error = "the container's monitor died; its exit status is unknown"
                r.died_unseen = True

        return self._store.update(container_id, lost)

    def _monitor_config(self, container: Container, config: ContainerConfig, attach: bool,
                        tty: bool) -> dict[str, object]:  # fmt: skip
        return {
            "container_id": container.id,
            "name": container.name,
            "storage_dir": str(self.settings.storage_dir),
            "attach": attach,
            "tty": tty,
            "log_max_size": config.log_max_size,
            "log_max_files": config.log_max_files,
            "auto_remove": config.auto_remove,
            "restart_policy": config.restart_policy.name,
            "restart_max": config.restart_policy.maximum_retry_count,
            "engine_env": self.settings.to_env(),
        }

    def _launch(
        self,
        container: Container,
        *,
        attach: bool,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
    ) -> Launch:
        """Start the container's monitor and run the plan up to exec."""
        directory = self._store.directory(container.id)
        config = container.config
        plan = Plan.from_json((directory / "plan.json").read_text())
        monitor = self._monitor_config(container, config, attach, config.tty)
        launch = Launch(plan, container.name, monitor, self._fork_server)
        # The cgroup is made, with its limits, while the monitor and PID 1 are forked;
        # at ``created`` only the move of PID 1 is left. That move waits out an RCU
        # grace period (5-20 ms of kernel time, see docs/performance.md): a bridged
        # container's veth is wired meanwhile. Both finish before PID 1's go-ahead.
        preparing = _Background(lambda: self._cgroups.prepare(container.id, config.resources))
        pending: list[_Background[Any]] = [preparing]

        def place(pid: int) -> None:
            def move_in() -> dict[str, str]:
                return self._cgroups.place(preparing.result(), pid)

            placing = _Background(move_in)
            pending.append(placing)
            try:
                self._networking.attach(container.id, pid)
            except BaseException as exc:
                placing.wait()  # (a cgroup it made goes with the failed start)
                if isinstance(exc, NetworkError):
                    raise LaunchError(
                        exc.message, container=container.name, step=exc.step,
                        errno=exc.errno, hint=exc.hint,
                    ) from exc  # fmt: skip
                raise
            try:
                paths = placing.result()
            except CgroupError as exc:  # a launch failure like any other: cleaned up below
                raise LaunchError(
                    exc.message, container=container.name, step=exc.step or "cgroup",
                    errno=exc.errno, path=exc.path, hint=exc.hint,
                ) from exc  # fmt: skip

            def remember(r: ContainerRecord) -> None:
                r.cgroup_paths = paths

            self._store.update(container.id, remember)
            fault_point("start.placed")

        try:
            launch.start(stdin=stdin, stdout=stdout, stderr=stderr, on_created=place)
        except BaseException as exc:  # a launch error, or Ctrl-C in the middle of one
            if isinstance(exc, LaunchError):
                code, message = exc.exit_code, str(exc)
            else:
                code, message = 125, f"the start was interrupted ({type(exc).__name__})"

            def failed(r: ContainerRecord) -> None:
                r.exit_code = code
                r.error = message

            for placing in pending:
                placing.wait()  # a preparation still under way would make a cgroup after us
            with contextlib.suppress(Codex32Error, OSError):
                self._store.update(container.id, failed)
            # Whatever got into the cgroup before the failure is dead or dies here;
            # a failed start keeps no cgroup (Docker's "created" has none either).
            with contextlib.suppress(CgroupError):
                self._cgroups.destroy(container.id)
            if config.auto_remove:
                self._networking.release(container.id)
                self._store.delete(container.record)
            else:
                self._networking.detach(container.id)  # proxy, IFB; the lease stays
            raise
        return launch

    def _start(self, container: Container, *, restarting: bool) -> None:
        with self._store.operation(container.id):
            record = self._refresh(container.id)
            if record.status is ContainerState.RUNNING:
                raise StateError(
                    "the container is already running", container=container.name,
                    hint="stop it first, or use restart",
                )  # fmt: skip
            if record.status is ContainerState.PAUSED:
                raise StateError("the container is paused", container=container.name,
                                 hint="use unpause")  # fmt: skip
            if restarting and record.stopped_by_user:
                return

            def prepare(r: ContainerRecord) -> None:
                r.stopped_by_user = False
                if restarting:
                    r.restart_count += 1
                elif r.status is not ContainerState.RESTARTING:
                    r.restart_count = 0

            self._store.update(container.id, prepare)
            fault_point("start.launch")
            launch = self._launch(
                container, attach=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            launch.detach()
        if restarting:
            self._event(container, "restart")
        self._reload_or_removed(container)  # an --rm one may have run and gone already

    def _run_attached(
        self,
        container: Container,
        *,
        stdin: FileArg,
        stdout: FileArg,
        stderr: FileArg,
        forward_signals: bool,
    ) -> RunResult:
        from codex32._store.logs import read_logs

        with self._store.operation(container.id):
            launch = self._launch(
                container, attach=stdout is not None, stdin=stdin,
                stdout=stdout if stdout is not None else subprocess.DEVNULL,
                stderr=stderr if stderr is not None else subprocess.DEVNULL,
            )  # fmt: skip
        # Read now: once we detach, an --rm container's monitor removes its config too.
        auto_remove = container.config.auto_remove
        try:
            with _forwarding(launch, forward_signals):
                status = _wait(launch)
            captured = {"stdout": b"", "stderr": b""}
            if stdout is None:
                for entry in read_logs(self._log_path(container.id), tail=None, since=None,
                                       until=None, streams={"stdout", "stderr"}):  # fmt: skip
                    captured[entry.stream] += entry.text.encode()
        finally:
            launch.detach()  # an --rm container's monitor now removes it
        if auto_remove:
            self._wait_removed(container.id, timeout=10)
        return RunResult(
            exit_code=status.exit_code,
            output=captured["stdout"],
            error_output=captured["stderr"],
            container_id=container.id,
        )

    def _keep_through_restart(self, container: Container) -> None:
        if not container.config.auto_remove:
            return

        def keep(r: ContainerRecord) -> None:
            r.keep_after_exit = True  # the monitor does not remove it; the start clears it

        self._store.update(container.id, keep)

    def _wait_removed(self, container_id: str, timeout: float) -> None:
        """Return once an ``--rm`` container's monitor has removed it (or after timeout)."""
        directory = self._store.directory(container_id)
        deadline = time.monotonic() + timeout
        while directory.exists() and time.monotonic() < deadline:
            time.sleep(0.002)

    def _signal_pid1(self, record: ContainerRecord, sig: int) -> bool:
        if not is_same_process(record.pid, record.pid_start_time):
            return False
        assert record.pid is not None
        try:
            os.kill(record.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _kill(self, container: Container, signal_: str | int) -> None:
        sig = signal.Signals[signal_name(signal_)]
        record = self._refresh(container.id)
        if record.status is not ContainerState.RUNNING or not self._signal_pid1(record, sig):
            raise StateError(
                f"cannot send {sig.name}: the container is {record.status.value}",
                container=container.name,
            )
        self._event(container, "kill", signal=str(int(sig)))
        container.reload()

    def _stop(self, container: Container, timeout: float | None) -> None:
        # Said before waiting for the verb lock: a restart under way (the monitor's
        # _restart holds the lock) then sees it and does not bring the container back.
        def intend(r: ContainerRecord) -> None:
            r.stopped_by_user = True

        self._store.update(container.id, intend)
        with self._store.operation(container.id):
            record = self._refresh(container.id)
            if record.status not in _LIVE:
                # It may have just crashed: its monitor must not restart it now.
                def keep_stopped(r: ContainerRecord) -> None:
                    r.stopped_by_user = True
                    if r.status is ContainerState.RESTARTING:  # the monitor got there first
                        r.status = ContainerState.EXITED

                self._store.update(container.id, keep_stopped)
                container.reload()
                return
            config = container.config
            grace = config.stop_timeout if timeout is None else timeout

            def mark(r: ContainerRecord) -> None:
                r.stopped_by_user = True
                if r.status is ContainerState.RESTARTING:
                    r.status = ContainerState.EXITED

            record = self._store.update(container.id, mark)
            if record.status is not ContainerState.EXITED:
                self._signal_pid1(record, signal.Signals[config.stop_signal])
                fault_point("stop.signalled")
                self._thaw(container.id)  # a paused container gets the signal too
                if not self._wait_exit(record, grace):
                    self._signal_pid1(record, signal.SIGKILL)
                    self._wait_exit(record, 10)
            with contextlib.suppress(ContainerNotFoundError):  # --rm: removed as it died
                self._wait_recorded(container.id, 5)
            if config.auto_remove and not record.keep_after_exit:
                # Its monitor removes it as it dies: once stop returns, it is gone (its
                # name free for a new container), not merely exited.
                self._wait_removed(container.id, 10)
        self._event(container, "stop")
        self._reload_or_removed(container)

    def _thaw(self, container_id: str) -> None:
        cgroup = self._cgroups.handle(container_id)
        if cgroup is not None and cgroup.is_frozen():
            cgroup.thaw()

    def _pause(self, container: Container, pause: bool) -> None:
        with self._store.operation(container.id):
            record = self._refresh(container.id)
            wanted = ContainerState.RUNNING if pause else ContainerState.PAUSED
            if record.status is not wanted:
                verb = "pause" if pause else "unpause"
                raise StateError(
                    f"cannot {verb} a {record.status.value} container", container=container.name
                )
            cgroup = self._cgroups.handle(container.id)
            if cgroup is None:
                raise CgroupError(
                    "pausing needs the freezer cgroup controller, and this container has no cgroup",
                    hint=self._cgroups.unavailable or "",
                )
            if pause:
                cgroup.freeze()
            else:
                cgroup.thaw()

            def change(r: ContainerRecord) -> None:
                r.status = ContainerState.PAUSED if pause else ContainerState.RUNNING

            self._store.update(container.id, change)
        self._event(container, "pause" if pause else "unpause")
        container.reload()

    def _stats(self, container: Container) -> ContainerStats:
        record = self._refresh(container.id)
        live = record.status in (ContainerState.RUNNING, ContainerState.PAUSED)
        config = container.config
        # A host-network container has no traffic of its own to count (Docker shows none).
        own_network = resolve_network(config.network, config.isolation.value) != HOST
        return self._cgroups.stats(container.id, record.pid if live else None, network=own_network)

    def _top(self, container: Container) -> list[dict[str, object]]:
        import psutil

        record = self._refresh(container.id)
        if record.status not in (ContainerState.RUNNING, ContainerState.PAUSED):
            raise StateError(f"the container is {record.status.value}", container=container.name)
        cgroup = self._cgroups.handle(container.id)
        pids = cgroup.pids() if cgroup is not None else [record.pid or 0]
        rows: list[dict[str, object]] = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                with proc.oneshot():
                    rows.append(
                        {
                            "pid": pid,
                            "ppid": proc.ppid(),
                            "user": proc.username(),
                            "cpu_percent": proc.cpu_percent(),
                            "rss_bytes": proc.memory_info().rss,
                            "started": proc.create_time(),
                            "command": " ".join(proc.cmdline()) or proc.name(),
                        }
                    )
        return rows

    def _wait_exit(self, record: ContainerRecord, timeout: float | None) -> bool:
        """Wait (pidfd) until PID 1 is gone; False on timeout."""
        if not is_same_process(record.pid, record.pid_start_time):
            return True
        assert record.pid is not None
        try:
            pidfd = os.pidfd_open(record.pid)
        except ProcessLookupError:
            return True
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(pidfd, selectors.EVENT_READ)
                return bool(selector.select(timeout))
        finally:
            os.close(pidfd)

    def _wait_recorded(self, container_id: str, timeout: float) -> ContainerRecord:
        """Wait until the monitor has written the exit down."""
        deadline = time.monotonic() + timeout
        while True:
            record = self._refresh(container_id)
            running = record.status in (ContainerState.RUNNING, ContainerState.PAUSED)
            if not running or time.monotonic() > deadline:
                return record
            time.sleep(0.005)

    def _wait(self, container: Container, timeout: float | None) -> int:
        if container._record.status is ContainerState.REMOVED:
            # This handle saw its --rm container removed (following its log, say):
            # the exit code of the run it followed is in the die event.
            return self._exit_code_from_events(container._record)
        record = self._refresh(container.id)
        deadline = None if timeout is None else time.monotonic() + timeout
        # As docker wait: a container not started yet is waited for through its run
        # (one whose start failed has the failure's exit code already).
        while record.status is ContainerState.CREATED and record.exit_code is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"container {container.name} not started after {timeout} s")
            time.sleep(0.02)
            try:
                record = self._refresh(container.id)
            except ContainerNotFoundError:  # an --rm one ran and was removed in between
                container._record.status = ContainerState.REMOVED
                return self._exit_code_from_events(record)  # (never started before: all)
        while record.status in (ContainerState.RUNNING, ContainerState.PAUSED):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._wait_exit(record, remaining):
                raise TimeoutError(f"container {container.name} still running after {timeout} s")
            try:
                record = self._wait_recorded(container.id, 5)
            except ContainerNotFoundError:
                # An --rm container removed as it died: its "die" event has the code.
                container._record.status = ContainerState.REMOVED
                return self._exit_code_from_events(record)
        container.reload()
        if record.exit_code is None:
            raise StateError("the container has not run yet", container=container.name)
        return record.exit_code

    def _exit_code_from_events(self, record: ContainerRecord) -> int:
        """The exit code in the container's last ``die`` event since it started."""
        code: int | None = None
        for event in read_events(
            self._events_path, since=record.started_at,
            filters={"container": [record.id], "event": ["die"]},
        ):  # fmt: skip
            with contextlib.suppress(KeyError, ValueError):
                code = int(event.attributes["exitCode"])
        if code is None:
            raise ContainerNotFoundError(
                f"no such container: {record.id} (removed before its exit was seen)"
            )
        return code

    def _wait_removed_by_monitor(self, record: ContainerRecord, timeout: float = 10) -> bool:
        """Wait for an exited --rm container's monitor to remove it; False if it cannot."""
        directory = self._store.directory(record.id)
        deadline = time.monotonic() + timeout
        while directory.exists():
            monitor_alive = is_same_process(record.monitor_pid, record.monitor_start_time)
            if not monitor_alive or time.monotonic() > deadline:
                return not directory.exists()
            time.sleep(0.01)
        return True

    def _reload_or_removed(self, container: Container) -> None:
        """Reload; an --rm container its monitor removed meanwhile is REMOVED."""
        try:
            container.reload()
        except ContainerNotFoundError:
            container._record.status = ContainerState.REMOVED

    def _remove(self, container: Container, force: bool) -> None:
        with self._store.operation(container.id):
            record = self._refresh(container.id)
            if record.status in _LIVE:
                if not force:
                    raise StateError(
                        f"cannot remove a {record.status.value} container",
                        container=container.name, hint="stop it first, or use --force",
                    )  # fmt: skip

                def mark(r: ContainerRecord) -> None:
                    r.stopped_by_user = True

                record = self._store.update(container.id, mark)
                auto_remove = container.config.auto_remove  # (gone with it once it dies)
                self._signal_pid1(record, signal.SIGKILL)
                self._thaw(container.id)
                self._wait_exit(record, 10)
                # An --rm container's monitor removes it as it dies (and says "destroy"):
                # leave that to it rather than race it, as long as it is there to do it.
                if auto_remove and self._wait_removed_by_monitor(record):
                    container._record.status = ContainerState.REMOVED
                    return
                try:
                    self._wait_recorded(container.id, 5)
                except ContainerNotFoundError:
                    container._record.status = ContainerState.REMOVED
                    return
            fault_point("remove.cleaning")
            self._cgroups.destroy(container.id)
            for path in set(record.cgroup_paths.values()):  # made under another parent
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            self._networking.release(container.id)
            self._store.delete(record)
        self._event(container, "destroy")
        container._record.status = ContainerState.REMOVED

    def _exec(
        self,
        container: Container,
        command: list[str],
        env: dict[str, str],
        user: str | None,
        workdir: str | None,
        stdin: FileArg,
        stdout: FileArg,
        stderr: FileArg,
        tty: bool = False,
    ) -> ExecResult:
        if not command:
            raise ConfigError("exec needs a command")
        record = self._refresh(container.id)
        if record.status is not ContainerState.RUNNING:
            raise StateError(
                f"cannot exec in a {record.status.value} container", container=container.name
            )
        plan = Plan.from_json((self._store.directory(container.id) / "plan.json").read_text())
        steps = _exec_steps(plan, command, env, user, workdir)
        self._event(container, "exec_start", execID=" ".join(command)[:64])
        cgroup = self._cgroups.handle(container.id)
        with _capture(stdout) as out, _capture(stderr) as err:
            terminal = None
            if tty:
                from codex32._runtime.terminal import ExecTerminal

                ptmx = f"/proc/{record.pid}/root/dev/pts/ptmx"
                terminal = ExecTerminal(stdin, out.target, ptmx)
                # Host root made it: give it to the container's root, whom a user
                # namespace maps elsewhere, so that the exec'd user can be given it.
                with contextlib.suppress(OSError):
                    os.fchown(terminal.slave, _host_uid_of_root(record.pid or 0), -1)
                terminal.start()
            try:
                slave = terminal.slave if terminal is not None else None
                code = run_exec(
                    record.pid or 0, steps, container.name,
                    stdin=stdin if slave is None else slave,
                    stdout=out.target if slave is None else slave,
                    stderr=err.target if slave is None else slave,
                    on_created=cgroup.add_pid if cgroup is not None else None,
                    tty=terminal is not None,
                )  # fmt: skip
            finally:
                if terminal is not None:
                    terminal.finish()
            result = ExecResult(code, out.read(), err.read())
        self._event(container, "exec_die", exitCode=str(code))
        return result

    def _export(self, container: Container, path: Path) -> None:
        import json

        plan = Plan.from_json((self._store.directory(container.id) / "plan.json").read_text())
        overlay = next(step for step in plan.steps if step["op"] == "overlay")
        shift = plan.uid_mappings[0]["hostID"] if plan.uid_mappings else 0
        spec = {k: overlay[k] for k in ("lower", "upper", "userxattr")} | {"id_shift": shift}
        tmp = path.with_name(f".{path.name}.codex32-tmp")
        try:
            with open(tmp, "wb") as out:
                result = subprocess.run(
                    [sys.executable, "-S", "-m", "codex32._runtime.export", json.dumps(spec)],
                    stdout=out, stderr=subprocess.PIPE, env=MONITOR_ENV, check=False,
                )  # fmt: skip
            if result.returncode != 0:
                raise ContainerError(
                    f"export failed: {result.stderr.decode(errors='replace').strip()}",
                    container=container.name, step="export",
                )  # fmt: skip
            os.replace(tmp, path)
        except OSError as exc:
            raise ContainerError(
                f"cannot write the export to {path}", container=container.name,
                step="export", errno=exc.errno, path=str(path),
                hint="check that the folder exists and is writable",
            ) from exc  # fmt: skip
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def reconcile(self) -> list[str]:
        """After a crash or reboot: mark dead containers exited, drop half-made ones."""
        return self._reconcile()[0]

    def recover(self) -> list[str]:
        """``reconcile``, then bring back what a reboot or crash took down, as dockerd
        does when it starts (``init_engine`` runs this).

        A container whose processes died unseen (no monitor wrote its exit) is started
        again if its restart policy asks for it (``always``, ``unless-stopped``, and
        ``on-failure[:N]`` with retries left) and a stop by the user was not under way;
        an ``--rm`` one is removed. Returns the ids ``reconcile`` fixed.
        """
        fixed, lost = self._reconcile()
        for container_id in lost:
            self._recover_lost(container_id)
        return fixed

    def _recover_lost(self, container_id: str) -> None:
        def seen(r: ContainerRecord) -> None:
            r.died_unseen = False  # acted on once, whatever comes of it

        try:
            record = self._store.update(container_id, seen)
            container = self.containers.get(container_id)
            config = container.config
            if config.auto_remove:
                container.remove(force=True)
                return
            policy = config.restart_policy
            retries_left = (
                policy.maximum_retry_count == 0 or record.restart_count < policy.maximum_retry_count
            )
            wanted = policy.name in ("always", "unless-stopped") or (
                policy.name == "on-failure" and retries_left
            )
            if wanted and not record.stopped_by_user:
                container.start(restarting=True)
        except Codex32Error as exc:  # one container's trouble does not stop the others
            log.warning("could not recover container %s: %s", container_id[:12], exc)

    def _stop_unmonitored(self, container_id: str) -> None:
        """Kill a container whose monitor died while it ran: nobody would log it, record
        its exit or apply its restart policy. It is then found lost (exit unknown), and
        ``recover`` restarts it under a fresh monitor if its policy asks."""
        record = self._store.load(container_id)
        if record.status not in (ContainerState.RUNNING, ContainerState.PAUSED):
            return
        if record.monitor_pid is None or is_same_process(
            record.monitor_pid, record.monitor_start_time
        ):
            return
        if self._signal_pid1(record, signal.SIGKILL):  # its whole pid namespace goes
            self._thaw(container_id)
            self._wait_exit(record, 10)

    def _reconcile(self) -> tuple[list[str], list[str]]:
        """(ids fixed, ids of containers found dead with no exit written)."""
        self._store.ensure_layout()
        fixed: list[str] = []
        lost: list[str] = []
        for path in self._store.containers.iterdir():
            if path.name.startswith(REMOVING_PREFIX):  # a removal killed half-way
                shutil.rmtree(path, ignore_errors=True)
                fixed.append(path.name[len(REMOVING_PREFIX) :])
                continue
            if not (path / "state.json").exists():
                if self._store.creation_under_way(path.name):
                    continue  # another process is creating it right now
                shutil.rmtree(path, ignore_errors=True)  # creation never finished
                fixed.append(path.name)
                continue
            try:
                before = self._store.load(path.name).status
                self._stop_unmonitored(path.name)
                after = self._refresh(path.name)
            except ContainerNotFoundError:
                continue  # removed meanwhile by another process
            if after.status is not before:
                fixed.append(path.name)
            if after.died_unseen:  # found so now, or by any verb since the reboot
                lost.append(path.name)
        self._store.drop_dangling_names()
        fixed += self._cgroups.remove_orphans(set(self._store.ids()))
        fixed += self._networking.reconcile()
        return fixed, lost


_EXEC_OPS = ("rlimits", "bounding_set", "user", "capabilities", "no_new_privs", "seccomp", "exec")


def _exec_steps(
    plan: Plan, command: list[str], env: dict[str, str], user: str | None, workdir: str | None
) -> list[Step]:
    """The container's own privilege steps, with the exec'd command swapped in."""
    steps = [dict(step) for step in plan.steps if step["op"] in _EXEC_OPS]
    for step in steps:
        if step["op"] == "user" and user:
            step["user"] = user
        if step["op"] == "exec":
            base = dict(item.split("=", 1) for item in step["env"])
            base.update(env)
            step.update(
                args=command,
                init=None,
                env=[f"{k}={v}" for k, v in base.items()],
                cwd=workdir or step["cwd"],
            )
    return steps


class _Background(Generic[T]):
    """A call run on its own thread at once; ``result()`` joins it and returns or raises."""

    def __init__(self, call: Callable[[], T]) -> None:
        self._call = call
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="codex32-background")
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._call()
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def wait(self) -> None:
        """Join, whatever the outcome."""
        self._thread.join()

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)


class _Captured:
    """A caller's descriptor passed through, or a temp file read back afterwards."""

    def __init__(self, target: FileArg, file: IO[bytes] | None) -> None:
        self._file = file
        self.target: FileArg = file if file is not None else target

    def read(self) -> bytes:
        if self._file is None:
            return b""
        self._file.seek(0)
        return self._file.read()


@contextmanager
def _capture(target: FileArg) -> Iterator[_Captured]:
    if target is not None:
        yield _Captured(target, None)
        return
    with tempfile.TemporaryFile() as file:
        yield _Captured(None, file)


def _host_uid_of_root(pid: int) -> int:
    """The host uid that uid 0 of ``pid``'s user namespace is (0 without one)."""
    with open(f"/proc/{pid}/uid_map") as f:
        for line in f:
            inside, outside, count = (int(x) for x in line.split())
            if inside == 0 and count > 0:
                return outside
    return 0


def _liveness(record: ContainerRecord) -> Literal["ok", "settling", "orphaned"]:
    """How a record stands against the kernel.

    ``ok`` (not live, or its PID 1 or, restarting, its monitor is there), ``settling``
    (PID 1 gone, its monitor alive and about to record the exit) or ``orphaned``.
    """
    if record.status not in _LIVE:
        return "ok"
    monitor_alive = is_same_process(record.monitor_pid, record.monitor_start_time)
    if record.status is ContainerState.RESTARTING:
        # A restart hands over to a new monitor; a moment without one is no loss.
        recent = time.time() - (record.finished_at or 0) < 5
        return "ok" if monitor_alive or recent else "orphaned"
    if is_same_process(record.pid, record.pid_start_time):
        return "ok"
    return "settling" if monitor_alive else "orphaned"


def _wait(launch: Launch) -> ExitStatus:
    try:
        return launch.wait()
    except KeyboardInterrupt:
        launch.kill(signal.SIGKILL)
        return launch.wait()


@contextmanager
def _forwarding(launch: Launch, enabled: bool) -> Iterator[None]:
    """Proxy SIGINT/SIGTERM/SIGHUP to the container's PID 1, as ``docker run`` does."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def forward(sig: int, _frame: object) -> None:
        launch.kill(sig)

    for sig in signals:
        signal.signal(sig, forward)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


SCRIPT_TEMPLATE = "python"
SCRIPT_DIR = "/app"


def _script_image(config: ContainerConfig) -> ContainerConfig:
    """``image=/path/bot.py`` (the original design's quick start): run that script in
    the python template, its folder bound read-only at /app."""
    if not config.image.endswith(".py"):
        return config
    script = Path(config.image)
    if not script.is_file():
        raise ImageError(f"bot script {script} does not exist", hint="give the path of a .py file")
    from codex32.config.container import Volume

    volume = Volume(source=str(script.parent), target=SCRIPT_DIR, read_only=True)
    return config.model_copy(
        update={
            "image": SCRIPT_TEMPLATE,
            "volumes": [*config.volumes, volume],
            "command": ["python3", f"{SCRIPT_DIR}/{script.name}", *config.command],
        }
    )


def _require_root() -> None:
    if os.geteuid() != 0:
        raise ConfigError(
            "codex32 needs root: it creates namespaces, mounts and cgroups",
            hint="run it with sudo, or as the host service",
        )


def _check_traversable(storage: Path, uid: int) -> None:
    """A user-namespaced root (host uid ``uid``) must be able to reach its layers."""
    for path in [storage, *storage.parents]:
        st = path.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise ConfigError(
                f"{path} is not searchable by other users, so a STRICT container's root "
                f"(host uid {uid}) cannot reach its layers under {storage}",
                hint=f"chmod o+x {path}, or set CODEX32_STORAGE_DIR to a path that is",
            )


_engine: ContainerEngine | None = None


def get_engine() -> ContainerEngine:
    """The process-wide engine (created from the environment on first use)."""
    global _engine  # noqa: PLW0603 - the original design's module-level singleton
    if _engine is None:
        _engine = ContainerEngine()
    return _engine


async def init_engine(storage_dir: str | os.PathLike[str] | None = None) -> ContainerEngine:
    """Create the process-wide engine (awaitable, as the FastAPI start-up uses it)."""
    import asyncio  # only the service's start-up needs it (~25 ms for every CLI call)

    global _engine  # noqa: PLW0603
    _engine = ContainerEngine(storage_dir)
    # reconcile uses pyroute2, which runs an event loop of its own: not on this one.
    await asyncio.to_thread(_engine.recover)
    return _engine


async def shutdown_engine() -> None:
    """Close and forget the process-wide engine (containers keep running)."""
    global _engine  # noqa: PLW0603
    if _engine is not None:
        _engine.close()
    _engine = None

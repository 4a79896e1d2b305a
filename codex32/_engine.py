"""ContainerEngine and Container: the one place where the layers are wired together.

Config (validated) -> profile -> template -> plan -> launch. Everything that can be
refused is refused before anything is created; anything created on the way is
removed again if a later step fails.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ._launch import ExitStatus, FileArg, Launch
from ._plan import ContainerPaths, Plan, build_plan
from ._profiles import Profile, resolve_profile
from ._state import ContainerRecord, ContainerState, StateStore
from ._templates import Template, TemplateStore
from .config import ContainerConfig, ContainerImage
from .errors import Codex32Error, ConfigError, LaunchError, StateError
from .settings import Settings


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


class Container:
    """A handle on one container (docker-py's shape: ``.id``, ``.name``, ``.state``)."""

    def __init__(self, engine: ContainerEngine, record: ContainerRecord) -> None:
        self._engine = engine
        self._record = record

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
        """The state as last loaded."""
        return self._record.status

    @property
    def record(self) -> ContainerRecord:
        """The full state record."""
        return self._record

    @property
    def config(self) -> ContainerConfig:
        """What the container was created from."""
        return ContainerConfig.model_validate(self._engine._store.load_config(self.id))

    def reload(self) -> None:
        """Re-read the state from disk."""
        self._record = self._engine._store.load(self.id)

    def remove(self, *, force: bool = False) -> None:
        """Delete the container's directory and name."""
        self.reload()
        if self._record.status in (ContainerState.RUNNING, ContainerState.PAUSED):
            if not force:
                raise StateError(
                    "cannot remove a running container",
                    container=self.name,
                    hint="stop it first, or use --force",
                )
            if self._record.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._record.pid, signal.SIGKILL)
        self._engine._store.delete(self._record)
        self._record.status = ContainerState.REMOVED


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

        With ``stdout``/``stderr`` left ``None`` the output is captured and returned;
        pass file descriptors (the CLI passes its own) to stream it instead. Failures
        to set up or execute raise ``LaunchError`` (exit code 125/126/127).
        """
        container = self.create(config)
        try:
            return self._engine._run_foreground(
                container, stdin=stdin, stdout=stdout, stderr=stderr,
                forward_signals=forward_signals,
            )  # fmt: skip
        finally:
            if config.auto_remove:
                container.remove(force=True)

    def get(self, name_or_id: str) -> Container:
        """Look a container up by name, id or unique id prefix."""
        store = self._engine._store
        return Container(self._engine, store.load(store.resolve(name_or_id)))

    def list(self, *, all: bool = False) -> list[Container]:
        """Running containers, or every container with ``all=True``."""
        store = self._engine._store
        containers = []
        for container_id in store.ids():
            try:
                record = store.load(container_id)
            except Codex32Error:
                continue
            if all or record.status is ContainerState.RUNNING:
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
        self, storage_dir: str | os.PathLike[str] | None = None, settings: Settings | None = None
    ) -> None:
        self.settings = settings or Settings.from_env(storage_dir)
        self._store = StateStore(self.settings.storage_dir)
        self._templates = TemplateStore(self.settings.templates_dir, self.settings.storage_dir)
        self.containers = ContainerCollection(self)
        self.images = ImageCollection(self)

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
            from ._seccomp_cache import default_program

            program = str(default_program(self.settings.storage_dir, profile.capabilities))
        return build_plan(
            config.name or container_id[:12],
            config,
            profile,
            template,
            paths,
            hostname=config.hostname or container_id[:12],
            seccomp_program=program,
        )

    def _lower(self, template: Template, profile: Profile | None = None) -> Path:
        if profile is not None and profile.userns:
            return self._templates.shifted_rootfs(template, self.settings.userns_uid_base)
        return self._templates.rootfs(template)

    # -- create --------------------------------------------------------------

    def _create(self, config: ContainerConfig) -> Container:
        _require_root()
        template = self._templates.get(config.image)
        profile = self.profile(config)
        self._store.ensure_layout()
        if profile.userns:
            _check_traversable(self.settings.storage_dir, self.settings.userns_uid_base)
        self._templates.ensure_built(template)
        lower = self._lower(template, profile)
        container_id = secrets.token_hex(32)
        name = config.name or container_id[:12]
        self._store.reserve_name(name, container_id)
        directory = self._store.directory(container_id)
        record = ContainerRecord(id=container_id, name=name, image=config.image)
        try:
            directory.mkdir(mode=0o711)
            os.chmod(directory, 0o711)
            for sub in ("upper", "work", "rootfs"):
                (directory / sub).mkdir(mode=0o755)
            if profile.userns:
                base = self.settings.userns_uid_base
                for sub in ("upper", "work"):
                    os.chown(directory / sub, base, base)
            self._store.save_config(container_id, config.model_dump(mode="json"))
            plan = self._plan(container_id, config, profile, template, lower)
            (directory / "plan.json").write_text(plan.describe())
            self._store.save(record)
        except BaseException:
            self._store.delete(record)
            raise
        return Container(self, record)

    # -- run -----------------------------------------------------------------

    def _run_foreground(
        self,
        container: Container,
        *,
        stdin: FileArg,
        stdout: FileArg,
        stderr: FileArg,
        forward_signals: bool,
    ) -> RunResult:
        directory = self._store.directory(container.id)
        plan = _load_plan(directory)
        launch = Launch(plan, container.name)
        record = container.record
        with _capture(stdout, directory) as out, _capture(stderr, directory) as err:
            try:
                pid = launch.start(stdin=stdin, stdout=out.target, stderr=err.target)
            except LaunchError as exc:
                record.status = ContainerState.EXITED
                record.exit_code = exc.exit_code
                record.error = str(exc)
                record.finished_at = time.time()
                self._store.save(record)
                raise
            record.status = ContainerState.RUNNING
            record.pid = pid
            record.pid_start_time = _start_time(pid)
            record.started_at = time.time()
            self._store.save(record)
            with _forwarding(launch, forward_signals):
                status = _wait(launch, container.name)
            record.status = ContainerState.EXITED
            record.exit_code = status.exit_code
            record.finished_at = time.time()
            self._store.save(record)
            out.close()
            err.close()
            return RunResult(
                exit_code=status.exit_code,
                output=out.read(),
                error_output=err.read(),
                container_id=container.id,
            )


def _wait(launch: Launch, name: str) -> ExitStatus:
    try:
        return launch.wait()
    except LaunchError:
        raise
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


class _Capture:
    """Either a caller's stream (passed through) or a temp file we read back."""

    def __init__(self, target: FileArg, file: IO[bytes] | None) -> None:
        self.target = target
        self._file = file

    def close(self) -> None:
        if self._file is not None:
            self._file.flush()

    def read(self) -> bytes:
        if self._file is None:
            return b""
        self._file.seek(0)
        return self._file.read()


@contextmanager
def _capture(target: FileArg, directory: Path) -> Iterator[_Capture]:
    if target is not None:
        yield _Capture(target, None)
        return
    with tempfile.TemporaryFile(dir=directory) as file:
        yield _Capture(file, file)


def _load_plan(directory: Path) -> Plan:
    return Plan.from_json((directory / "plan.json").read_text())


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the pid, it names one process for sure."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


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
    global _engine  # noqa: PLW0603
    _engine = ContainerEngine(storage_dir)
    _engine._store.ensure_layout()
    return _engine


async def shutdown_engine() -> None:
    """Forget the process-wide engine (containers keep running)."""
    global _engine  # noqa: PLW0603
    _engine = None

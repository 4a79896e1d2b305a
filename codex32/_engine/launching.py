"""Start: the launch protocol driven from the engine's side, attached runs."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from codex32._engine import create, records, threads, waiting
from codex32._engine.results import RunResult
from codex32._plan.plan import Plan
from codex32._runtime.faults import point as fault_point
from codex32._runtime.launch import ExitStatus, FileArg, Launch
from codex32._store.state import ContainerRecord, ContainerState
from codex32.config.container import ContainerConfig
from codex32.errors import CgroupError, Codex32Error, LaunchError, NetworkError, StateError

if TYPE_CHECKING:
    from codex32._cgroups.driver import Cgroup
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine


def monitor_config(
    engine: ContainerEngine, container: Container, config: ContainerConfig, attach: bool, tty: bool
) -> dict[str, object]:
    return {
        "container_id": container.id,
        "name": container.name,
        "storage_dir": str(engine.settings.storage_dir),
        "attach": attach,
        "tty": tty,
        "log_max_size": config.log_max_size,
        "log_max_files": config.log_max_files,
        "auto_remove": config.auto_remove,
        "restart_policy": config.restart_policy.name,
        "restart_max": config.restart_policy.maximum_retry_count,
        "engine_env": engine.settings.to_env(),
    }


def launch_container(
    engine: ContainerEngine,
    container: Container,
    *,
    attach: bool,
    stdin: FileArg = None,
    stdout: FileArg = None,
    stderr: FileArg = None,
) -> Launch:
    """Start the container's monitor and run the plan up to exec."""
    directory = engine._store.directory(container.id)
    config = container.config
    plan = Plan.from_json((directory / "plan.json").read_text())
    devices = create.device_rules_of(container, config)  # before anything is started
    monitor = monitor_config(engine, container, config, attach, config.tty)
    sandbox = engine._pool.take(plan)
    launch = Launch(plan, container.name, monitor, engine._fork_server, sandbox)
    held = sandbox.cgroup if sandbox is not None else None
    # The cgroup is made, with its limits, while the monitor and PID 1 are forked;
    # at ``created`` only the move of PID 1 is left. That move waits out an RCU
    # grace period (5-20 ms of kernel time, see docs/performance.md): a bridged
    # container's veth is wired meanwhile. Both finish before PID 1's go-ahead.
    # A pooled sandbox's PID 1 is in a cgroup already (v1): it is renamed instead.
    preparing: threads.Background[Cgroup | None]
    if held is not None:
        preparing = threads.Background(
            lambda: engine._cgroups.adopt(held, container.id, config.resources, devices)
        )
    else:
        preparing = threads.Background(
            lambda: engine._cgroups.prepare(container.id, config.resources, devices)
        )
    pending: list[threads.Background[Any]] = [preparing]

    def place(pid: int) -> dict[str, object]:
        def move_in() -> dict[str, str]:
            cgroup = preparing.result()
            if (held is not None and launch.claimed) or launch.in_cgroup:
                return dict(cgroup.paths) if cgroup is not None else {}
            if held is not None:  # the sandbox could not take it: a cgroup never held
                cgroup = engine._cgroups.prepare(container.id, config.resources, devices)
            return engine._cgroups.place(cgroup, pid)

        placing = threads.Background(move_in)
        pending.append(placing)
        try:
            engine._networking.attach(container.id, pid)
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

        fault_point("start.placed")
        # The monitor records them with the start, in the same write (not one more here).
        return {"cgroup_paths": paths}

    def fork_target() -> int | None:
        """On v2, PID 1 is forked straight into its cgroup (not from a user namespace)."""
        if "user" in plan.namespaces or not engine._cgroups.forks_into():
            return None  # (v1: the plan goes at once, the cgroup is made meanwhile)
        try:
            return engine._cgroups.fork_target(preparing.result())
        except (CgroupError, OSError):
            return None  # ``place`` moves it, and reports a cgroup that failed as before

    try:
        launch.start(stdin=stdin, stdout=stdout, stderr=stderr, on_created=place,
                     cgroup_fd=fork_target)  # fmt: skip
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
            engine._store.update(container.id, failed)
        # Whatever got into the cgroup before the failure is dead or dies here;
        # a failed start keeps no cgroup (Docker's "created" has none either).
        with contextlib.suppress(CgroupError):
            engine._cgroups.destroy(container.id)
        if config.auto_remove:
            engine._networking.release(container.id)
            engine._store.delete(container.record)
        else:
            engine._networking.detach(container.id)  # proxy, IFB; the lease stays
        raise
    finally:
        engine._pool.done(sandbox, launch.claimed)  # counted, and the pool refills now
    return launch


def start(
    engine: ContainerEngine,
    container: Container,
    *,
    restarting: bool,
    stdin: FileArg = None,
    stdout: FileArg = None,
    stderr: FileArg = None,
) -> None:
    with engine._store.operation(container.id):
        record = records.refresh(engine, container.id)
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

        engine._store.update(container.id, prepare)
        fault_point("start.launch")
        attach = stdout is not None
        launch = launch_container(
            engine,
            container,
            attach=attach,
            stdin=stdin if attach else None,
            stdout=stdout if attach else subprocess.DEVNULL,
            stderr=stderr if attach and stderr is not None else subprocess.DEVNULL,
        )
        launch.detach()
    if restarting:
        records.event(engine, container, "restart")
    waiting.reload_or_removed(engine, container)  # an --rm one may have run and gone already


def run_attached(
    engine: ContainerEngine,
    container: Container,
    *,
    stdin: FileArg,
    stdout: FileArg,
    stderr: FileArg,
    forward_signals: bool,
) -> RunResult:
    from codex32._store.logs import read_logs

    with engine._store.operation(container.id):
        launch = launch_container(engine,
            container, attach=stdout is not None, stdin=stdin,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=stderr if stderr is not None else subprocess.DEVNULL,
        )  # fmt: skip
    # Read now: once we detach, an --rm container's monitor removes its config too.
    auto_remove = container.config.auto_remove
    try:
        with forwarding(launch, forward_signals):
            status = wait_launch(launch)
        captured = {"stdout": b"", "stderr": b""}
        if stdout is None:
            for entry in read_logs(records.log_path(engine, container.id), tail=None, since=None,
                                   until=None, streams={"stdout", "stderr"}):  # fmt: skip
                captured[entry.stream] += entry.text.encode()
    finally:
        launch.detach()  # an --rm container's monitor now removes it
    if auto_remove:
        waiting.wait_removed(engine, container.id, timeout=10)
    return RunResult(
        exit_code=status.exit_code,
        output=captured["stdout"],
        error_output=captured["stderr"],
        container_id=container.id,
    )


def keep_through_restart(engine: ContainerEngine, container: Container) -> None:
    if not container.config.auto_remove:
        return

    def keep(r: ContainerRecord) -> None:
        r.keep_after_exit = True  # the monitor does not remove it; the start clears it

    engine._store.update(container.id, keep)


def wait_launch(launch: Launch) -> ExitStatus:
    try:
        return launch.wait()
    except KeyboardInterrupt:
        launch.kill(signal.SIGKILL)
        return launch.wait()


@contextmanager
def forwarding(launch: Launch, enabled: bool) -> Iterator[None]:
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

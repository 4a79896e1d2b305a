"""Signals to a container: kill, stop (with its timeout), pause and unpause."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from typing import TYPE_CHECKING

from codex32._engine import records, waiting
from codex32._engine.results import LIVE
from codex32._linux.process import in_cgroup_named, is_namespace_init
from codex32._runtime.faults import point as fault_point
from codex32._store.state import ContainerRecord, ContainerState, is_same_process
from codex32.config.container import signal_name
from codex32.errors import CgroupError, ContainerNotFoundError, StateError

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine


def signal_pid1(engine: ContainerEngine, record: ContainerRecord, sig: int) -> bool:
    if not is_same_process(record.pid, record.pid_start_time):
        return False
    assert record.pid is not None
    if not is_namespace_init(record.pid):  # a record pointing at a host process
        return False
    if record.cgroup_paths and not in_cgroup_named(record.pid, record.id):
        return False
    try:
        os.kill(record.pid, sig)
    except ProcessLookupError:
        return False
    return True


def kill(engine: ContainerEngine, container: Container, signal_: str | int) -> None:
    sig = signal.Signals[signal_name(signal_)]
    record = records.refresh(engine, container.id)
    if record.status is not ContainerState.RUNNING or not signal_pid1(engine, record, sig):
        raise StateError(
            f"cannot send {sig.name}: the container is {record.status.value}",
            container=container.name,
        )
    records.event(engine, container, "kill", signal=str(int(sig)))
    container.reload()


def stop(engine: ContainerEngine, container: Container, timeout: float | None) -> None:
    # Said before waiting for the verb lock: a restart under way (the monitor's
    # _restart holds the lock) then sees it and does not bring the container back.
    def intend(r: ContainerRecord) -> None:
        r.stopped_by_user = True

    engine._store.update(container.id, intend)
    with engine._store.operation(container.id):
        record = records.refresh(engine, container.id)
        if record.status not in LIVE:
            # It may have just crashed: its monitor must not restart it now.
            def keep_stopped(r: ContainerRecord) -> None:
                r.stopped_by_user = True
                if r.status is ContainerState.RESTARTING:  # the monitor got there first
                    r.status = ContainerState.EXITED

            engine._store.update(container.id, keep_stopped)
            container.reload()
            return
        config = container.config
        grace = config.stop_timeout if timeout is None else timeout

        def mark(r: ContainerRecord) -> None:
            r.stopped_by_user = True
            if r.status is ContainerState.RESTARTING:
                r.status = ContainerState.EXITED

        record = engine._store.update(container.id, mark)
        if record.status is not ContainerState.EXITED:
            signal_pid1(engine, record, signal.Signals[config.stop_signal])
            fault_point("stop.signalled")
            thaw(engine, container.id)  # a paused container gets the signal too
            if not waiting.wait_exit(engine, record, grace):
                signal_pid1(engine, record, signal.SIGKILL)
                waiting.wait_exit(engine, record, 10)
        with contextlib.suppress(ContainerNotFoundError):  # --rm: removed as it died
            waiting.wait_recorded(engine, container.id, 5)
        if config.auto_remove and not record.keep_after_exit:
            # Its monitor removes it as it dies: once stop returns, it is gone (its
            # name free for a new container), not merely exited.
            waiting.wait_removed(engine, container.id, 10)
    records.event(engine, container, "stop")
    waiting.reload_or_removed(engine, container)


def thaw(engine: ContainerEngine, container_id: str) -> None:
    """Thaw a frozen container, so that it gets a signal or can die. A cgroup that its
    monitor removed meanwhile (the container exited: it gives its cgroup back) has
    nothing to thaw."""
    cgroup = engine._cgroups.handle(container_id)
    try:
        if cgroup is not None and cgroup.is_frozen():
            cgroup.thaw()
    except CgroupError as exc:
        # ENOENT: the directory is gone; ENODEV: a file of a cgroup being removed.
        if exc.errno not in (errno.ENOENT, errno.ENODEV):
            raise


def pause(engine: ContainerEngine, container: Container, pause: bool) -> None:
    with engine._store.operation(container.id):
        record = records.refresh(engine, container.id)
        wanted = ContainerState.RUNNING if pause else ContainerState.PAUSED
        if record.status is not wanted:
            verb = "pause" if pause else "unpause"
            raise StateError(
                f"cannot {verb} a {record.status.value} container", container=container.name
            )
        cgroup = engine._cgroups.handle(container.id)
        if cgroup is None:
            raise CgroupError(
                "pausing needs the freezer cgroup controller, and this container has no cgroup",
                hint=engine._cgroups.unavailable or "",
            )
        if pause:
            cgroup.freeze()
        else:
            cgroup.thaw()

        def change(r: ContainerRecord) -> None:
            r.status = ContainerState.PAUSED if pause else ContainerState.RUNNING

        engine._store.update(container.id, change)
    records.event(engine, container, "pause" if pause else "unpause")
    container.reload()

"""Waiting for a container: its exit, its record, its removal by the monitor."""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from typing import TYPE_CHECKING

from codex32._engine import records
from codex32._store.events import read_events
from codex32._store.state import (
    REMOVING_PREFIX,
    ContainerRecord,
    ContainerState,
    is_same_process,
)
from codex32.errors import ContainerNotFoundError, StateError

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine


def wait_removed(engine: ContainerEngine, container_id: str, timeout: float) -> None:
    """Return once an ``--rm`` container's monitor has removed it (or after timeout):
    its directory, and the ``.removing-ID`` it is renamed to while its files go."""
    directory = engine._store.directory(container_id)
    paths = (str(directory), str(directory.with_name(REMOVING_PREFIX + container_id)))
    start = time.monotonic()
    deadline = start + timeout
    while any(map(os.path.exists, paths)) and (now := time.monotonic()) < deadline:
        # The removal takes a few ms after the exit: poll finely then (a run --rm
        # returns when it is done), coarsely if it lingers.
        time.sleep(0.0005 if now - start < 0.1 else 0.005)


def wait_exit(engine: ContainerEngine, record: ContainerRecord, timeout: float | None) -> bool:
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


def wait_recorded(engine: ContainerEngine, container_id: str, timeout: float) -> ContainerRecord:
    """Wait until the monitor has written the exit down."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        record = records.refresh(engine, container_id)  # (a stat while unchanged)
        running = record.status in (ContainerState.RUNNING, ContainerState.PAUSED)
        if not running or (now := time.monotonic()) > deadline:
            return record
        # The monitor writes it a millisecond or two after the exit (``stop`` waits).
        time.sleep(0.001 if now - start < 0.1 else 0.005)


def wait(engine: ContainerEngine, container: Container, timeout: float | None) -> int:
    if container._record.status is ContainerState.REMOVED:
        # This handle saw its --rm container removed (following its log, say):
        # the exit code of the run it followed is in the die event.
        return exit_code_from_events(engine, container._record)
    try:
        record = records.refresh(engine, container.id)
    except ContainerNotFoundError:
        # An --rm container that ran and was removed before this wait looked (a fast
        # /bin/true): the die event since this handle's record has its exit code.
        container._record.status = ContainerState.REMOVED
        return exit_code_from_events(engine, container._record)
    deadline = None if timeout is None else time.monotonic() + timeout
    # As docker wait: a container not started yet is waited for through its run
    # (one whose start failed has the failure's exit code already).
    while record.status is ContainerState.CREATED and record.exit_code is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"container {container.name} not started after {timeout} s")
        time.sleep(0.02)
        try:
            record = records.refresh(engine, container.id)
        except ContainerNotFoundError:  # an --rm one ran and was removed in between
            container._record.status = ContainerState.REMOVED
            return exit_code_from_events(engine, record)  # (never started before: all)
    while record.status in (ContainerState.RUNNING, ContainerState.PAUSED):
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not wait_exit(engine, record, remaining):
            raise TimeoutError(f"container {container.name} still running after {timeout} s")
        try:
            record = wait_recorded(engine, container.id, 5)
        except ContainerNotFoundError:
            # An --rm container removed as it died: its "die" event has the code.
            container._record.status = ContainerState.REMOVED
            return exit_code_from_events(engine, record)
    # (An --rm container may be removed by now: its exit code is in the record we read.)
    reload_or_removed(engine, container)
    if record.exit_code is None:
        raise StateError("the container has not run yet", container=container.name)
    return record.exit_code


def exit_code_from_events(engine: ContainerEngine, record: ContainerRecord) -> int:
    """The exit code in the container's last ``die`` event since it started."""
    code: int | None = None
    for event in read_events(
        engine._events_path, since=record.started_at,
        filters={"container": [record.id], "event": ["die"]},
    ):  # fmt: skip
        with contextlib.suppress(KeyError, ValueError):
            code = int(event.attributes["exitCode"])
    if code is None:
        raise ContainerNotFoundError(
            f"no such container: {record.id} (removed before its exit was seen)"
        )
    return code


def wait_removed_by_monitor(
    engine: ContainerEngine, record: ContainerRecord, timeout: float = 10
) -> bool:
    """Wait for an exited --rm container's monitor to remove it; False if it cannot."""
    directory = engine._store.directory(record.id)
    deadline = time.monotonic() + timeout
    while directory.exists():
        monitor_alive = is_same_process(record.monitor_pid, record.monitor_start_time)
        if not monitor_alive or time.monotonic() > deadline:
            return not directory.exists()
        time.sleep(0.01)
    return True


def reload_or_removed(engine: ContainerEngine, container: Container) -> None:
    """Reload; an --rm container its monitor removed meanwhile is REMOVED."""
    try:
        container.reload()
    except ContainerNotFoundError:
        container._record.status = ContainerState.REMOVED

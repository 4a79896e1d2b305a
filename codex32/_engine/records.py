"""A container's record against the kernel: refresh, liveness, events, log path."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from codex32._engine.results import LIVE
from codex32._store.events import Event
from codex32._store.state import ContainerRecord, ContainerState, is_same_process

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine


def log_path(engine: ContainerEngine, container_id: str) -> Path:
    return engine._store.directory(container_id) / "container.log"


def event(engine: ContainerEngine, container: Container, action: str, **attributes: str) -> None:
    from codex32._store.events import append_event

    event = Event(
        time=time.time(), type="container", action=action, id=container.id,
        name=container.name, attributes=attributes,
    )  # fmt: skip
    with contextlib.suppress(OSError):
        append_event(engine.settings.storage_dir / "events.jsonl", event)


#: How often a settling record is read again. The monitor writes an exit down a few ms
#: after PID 1 ended (an fsync'd write); a reader that came in between (``run``'s log
#: follow, a ``get`` right after the exit) waits for that, and no more than it must.
_SETTLE_POLL = 0.002


def refresh(engine: ContainerEngine, container_id: str) -> ContainerRecord:
    """The record, corrected by what the kernel says (pid alive and the same?).

    A live record whose PID 1 is gone while its monitor lives is being written
    down: give the monitor a moment. It may then move on to RESTARTING, or to a new
    PID 1, as well as to EXITED; each is judged afresh, and only a record that
    stays orphaned (no PID 1, no monitor) is marked as lost.
    """
    deadline = time.monotonic() + 2
    while True:
        record = engine._store.load(container_id)
        verdict = liveness(record)
        if verdict != "settling" or time.monotonic() > deadline:
            break
        time.sleep(_SETTLE_POLL)
    if verdict != "orphaned":
        return record

    def lost(r: ContainerRecord) -> None:
        if liveness(r) == "orphaned":  # judged again under the state lock
            r.status = ContainerState.EXITED
            r.exit_code = r.exit_code if r.exit_code is not None else 255
            r.finished_at = r.finished_at or time.time()
            r.error = "the container's monitor died; its exit status is unknown"
            r.died_unseen = True

    return engine._store.update(container_id, lost)


def host_uid_of_root(pid: int) -> int:
    """The host uid that uid 0 of ``pid``'s user namespace is (0 without one)."""
    with open(f"/proc/{pid}/uid_map") as f:
        for line in f:
            inside, outside, count = (int(x) for x in line.split())
            if inside == 0 and count > 0:
                return outside
    return 0


def liveness(record: ContainerRecord) -> Literal["ok", "settling", "orphaned"]:
    """How a record stands against the kernel.

    ``ok`` (not live, or its PID 1 or, restarting, its monitor is there), ``settling``
    (PID 1 gone, its monitor alive and about to record the exit) or ``orphaned``.
    """
    if record.status not in LIVE:
        return "ok"
    monitor_alive = is_same_process(record.monitor_pid, record.monitor_start_time)
    if record.status is ContainerState.RESTARTING:
        # A restart hands over to a new monitor; a moment without one is no loss.
        recent = time.time() - (record.finished_at or 0) < 5
        return "ok" if monitor_alive or recent else "orphaned"
    if is_same_process(record.pid, record.pid_start_time):
        return "ok"
    return "settling" if monitor_alive else "orphaned"

"""Reconcile and recover after a crash or reboot, as dockerd does at start."""

from __future__ import annotations

import logging
import shutil
import signal
from typing import TYPE_CHECKING

from codex32._engine import records, stopping, waiting
from codex32._store.state import REMOVING_PREFIX, ContainerRecord, ContainerState, is_same_process
from codex32.errors import Codex32Error, ContainerNotFoundError, DamagedRecordError

if TYPE_CHECKING:
    from codex32._engine.engine import ContainerEngine

log = logging.getLogger("codex32")


def recover_lost(engine: ContainerEngine, container_id: str) -> None:
    def seen(r: ContainerRecord) -> None:
        r.died_unseen = False  # acted on once, whatever comes of it

    try:
        record = engine._store.update(container_id, seen)
        container = engine.containers.get(container_id)
        # The record says --rm without config.json, which an --rm create does not
        # fsync (the record's default, False, for records older than the field).
        if record.auto_remove or container.config.auto_remove:
            container.remove(force=True)
            return
        config = container.config
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


def stop_unmonitored(engine: ContainerEngine, container_id: str) -> None:
    """Kill a container whose monitor died while it ran: nobody would log it, record
    its exit or apply its restart policy. It is then found lost (exit unknown), and
    ``recover`` restarts it under a fresh monitor if its policy asks."""
    record = engine._store.load(container_id)
    if record.status not in (ContainerState.RUNNING, ContainerState.PAUSED):
        return
    if record.monitor_pid is None or is_same_process(record.monitor_pid, record.monitor_start_time):
        return
    if stopping.signal_pid1(engine, record, signal.SIGKILL):  # its whole pid namespace goes
        stopping.thaw(engine, container_id)
        waiting.wait_exit(engine, record, 10)


def reconcile(engine: ContainerEngine) -> tuple[list[str], list[str]]:
    """(ids fixed, ids of containers found dead with no exit written)."""
    engine._store.ensure_layout()
    fixed: list[str] = []
    lost: list[str] = []
    for path in engine._store.containers.iterdir():
        if path.name.startswith(REMOVING_PREFIX):  # a removal killed half-way
            shutil.rmtree(path, ignore_errors=True)
            fixed.append(path.name[len(REMOVING_PREFIX) :])
            continue
        if not (path / "state.json").exists():
            if engine._store.creation_under_way(path.name):
                continue  # another process is creating it right now
            shutil.rmtree(path, ignore_errors=True)  # creation never finished
            fixed.append(path.name)
            continue
        try:
            before = engine._store.load(path.name).status
            stop_unmonitored(engine, path.name)
            after = records.refresh(engine, path.name)
        except ContainerNotFoundError:
            continue  # removed meanwhile by another process
        except DamagedRecordError as exc:  # left for `rm -f`; the others go on
            log.warning("%s", exc)
            continue
        if after.status is not before:
            fixed.append(path.name)
        if after.died_unseen:  # found so now, or by any verb since the reboot
            lost.append(path.name)
    engine._store.drop_dangling_names()
    fixed += engine._cgroups.remove_orphans(set(engine._store.ids()))
    fixed += engine._networking.reconcile()
    return fixed, lost

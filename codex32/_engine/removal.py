"""Removing a container, a damaged record included."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import TYPE_CHECKING

from codex32._engine import records, stopping, waiting
from codex32._engine.results import LIVE
from codex32._store.state import ContainerRecord, ContainerState, is_container_id
from codex32.errors import ContainerNotFoundError, DamagedRecordError, StateError

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine


def remove(engine: ContainerEngine, container: Container, force: bool) -> None:
    with engine._store.operation(container.id):
        record = records.refresh(engine, container.id)
        if record.status in LIVE:
            if not force:
                raise StateError(
                    f"cannot remove a {record.status.value} container",
                    container=container.name, hint="stop it first, or use --force",
                )  # fmt: skip

            def mark(r: ContainerRecord) -> None:
                r.stopped_by_user = True

            record = engine._store.update(container.id, mark)
            stopping.signal_pid1(engine, record, signal.SIGKILL)
            stopping.thaw(engine, container.id)
            waiting.wait_exit(engine, record, 10)
            # An --rm container's monitor removes it as it dies (and says "destroy"):
            # leave that to it rather than race it, as long as it is there to do it.
            if container.config.auto_remove and waiting.wait_removed_by_monitor(engine, record):
                container._record.status = ContainerState.REMOVED
                return
            try:
                waiting.wait_recorded(engine, container.id, 5)
            except ContainerNotFoundError:
                container._record.status = ContainerState.REMOVED
                return
        engine._cgroups.destroy(container.id)
        for path in set(record.cgroup_paths.values()):  # made under another parent
            with contextlib.suppress(OSError):
                os.rmdir(path)
        engine._networking.release(container.id)
        engine._store.delete(record)
    records.event(engine, container, "destroy")
    container._record.status = ContainerState.REMOVED


def remove_damaged(engine: ContainerEngine, name_or_id: str) -> str:
    store = engine._store
    try:
        container_id = store.resolve(name_or_id)
    except ContainerNotFoundError:
        # A directory whose name is no id (damaged that way) is named as it is.
        if "/" in name_or_id or name_or_id in ("", ".", ".."):
            raise
        container_id = name_or_id
    try:
        store.load(container_id)
    except DamagedRecordError:
        pass
    else:
        raise StateError(f"the record of {name_or_id} is not damaged", hint="remove it with `rm`")
    directory = store.directory(container_id)
    if directory.parent != store.containers or not directory.is_dir():
        raise ContainerNotFoundError(f"no such container: {name_or_id}")
    with store.operation(container_id):
        if is_container_id(container_id):  # its cgroup, its network: named by the id
            engine._cgroups.destroy(container_id)
            engine._networking.release(container_id)
        shutil.rmtree(directory, ignore_errors=True)
        store.drop_dangling_names()
    return container_id

"""Which state writes are fsync'd (``is_durable_change``) and that every write is atomic."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from codex32._store.state import (
    ContainerRecord,
    ContainerState,
    StateStore,
    is_durable_change,
)
from codex32.errors import DamagedRecordError

ID = "0c" + "3" * 62


def _running(**fields: object) -> ContainerRecord:
    record = ContainerRecord(ID, "bot", "busybox", status=ContainerState.RUNNING, pid=42,
                             pid_start_time=7, started_at=1.0)  # fmt: skip
    for key, value in fields.items():
        setattr(record, key, value)
    return record


def _exited(record: ContainerRecord) -> None:
    record.status = ContainerState.EXITED
    record.exit_code = 0
    record.finished_at = 2.0


def _changed(before: ContainerRecord, change: Callable[[ContainerRecord], None]) -> bool:
    after = ContainerRecord.from_dict(before.to_dict())
    change(after)
    return is_durable_change(before, after)


def test_the_create_is_durable() -> None:
    assert is_durable_change(None, ContainerRecord(ID, "bot", "busybox"))


def test_the_start_record_and_cgroup_paths_are_not() -> None:
    created = ContainerRecord(ID, "bot", "busybox")

    def start(r: ContainerRecord) -> None:
        r.status, r.pid, r.pid_start_time, r.monitor_pid = ContainerState.RUNNING, 42, 7, 41
        r.started_at, r.exit_code, r.error = 1.0, None, None

    def placed(r: ContainerRecord) -> None:
        r.cgroup_paths = {"memory": f"/sys/fs/cgroup/memory/codex32/{ID}"}

    assert not _changed(created, start)
    assert not _changed(created, placed)
    # A restart's start clears the last exit: no new outcome, nothing to keep.
    last_run = _running(status=ContainerState.EXITED, exit_code=3, finished_at=2.0)
    assert not _changed(last_run, start)


def test_live_marks_and_restarting_are_not() -> None:
    def oom(r: ContainerRecord) -> None:
        r.oom_killed = True

    def restarting(r: ContainerRecord) -> None:
        r.status = ContainerState.RESTARTING

    assert not _changed(_running(), oom)
    assert not _changed(_running(), restarting)


def test_the_exit_record_is_durable_unless_the_monitor_removes_the_container() -> None:
    assert _changed(_running(), _exited)
    assert not _changed(_running(auto_remove=True), _exited)
    # An --rm container kept through a restart stays: its exit is kept too.
    assert _changed(_running(auto_remove=True, keep_after_exit=True), _exited)


def test_a_failed_start_and_a_lost_container_are_durable() -> None:
    def failed(r: ContainerRecord) -> None:
        r.exit_code, r.error = 127, "exec: no such file"

    def lost(r: ContainerRecord) -> None:
        r.status, r.exit_code, r.finished_at, r.died_unseen = ContainerState.EXITED, 255, 3.0, True

    assert _changed(ContainerRecord(ID, "bot", "busybox"), failed)
    assert _changed(_running(), lost)


def test_the_users_stop_and_start_are_durable() -> None:
    def stop(r: ContainerRecord) -> None:
        r.stopped_by_user = True

    def start(r: ContainerRecord) -> None:
        r.stopped_by_user = False

    assert _changed(_running(), stop)
    assert _changed(_running(status=ContainerState.EXITED, stopped_by_user=True), start)


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path)
    store.containers.mkdir()
    store.directory(ID).mkdir()
    return store


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each ``os.fsync`` call synced: a file's path or a directory's."""
    calls: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_update_fsyncs_only_durable_changes(store: StateStore, fsynced: list[str]) -> None:
    store.save_created(ContainerRecord(ID, "bot", "busybox", auto_remove=True))
    directory = str(store.directory(ID))
    # The data, then the container's directory (the rename).
    assert fsynced[0].startswith(f"{directory}/.state.json.")
    assert fsynced[1:] == [directory]
    fsynced.clear()

    def start(r: ContainerRecord) -> None:
        r.status, r.pid, r.pid_start_time = ContainerState.RUNNING, 42, 7

    store.update(ID, start)
    store.update(ID, _exited)  # --rm: removed next
    assert fsynced == []
    assert store.load(ID).status is ContainerState.EXITED  # written all the same

    def stop(r: ContainerRecord) -> None:
        r.stopped_by_user = True

    store.update(ID, stop)
    assert len(fsynced) == 2 and fsynced[1] == directory
    fsynced.clear()
    store.update(ID, start, durable=True)  # a caller may insist
    assert len(fsynced) == 2


def test_no_write_leaves_a_temp_file_or_a_part(store: StateStore) -> None:
    store.save_created(ContainerRecord(ID, "bot", "busybox"))
    for durable in (False, True):
        store.save(ContainerRecord(ID, "bot", "busybox", exit_code=1), durable=durable)
    assert sorted(os.listdir(store.directory(ID))) == ["state.json"]
    assert json.loads((store.directory(ID) / "state.json").read_text())["exit_code"] == 1


@pytest.mark.parametrize("torn", ["", '{"id": "' + ID + '", "name": "bo'])
def test_a_torn_state_file_is_a_damaged_record(store: StateStore, torn: str) -> None:
    # What a power cut can leave where a filesystem renamed before it wrote the data.
    store.save_created(ContainerRecord(ID, "bot", "busybox"))
    (store.directory(ID) / "state.json").write_text(torn)
    with pytest.raises(DamagedRecordError, match="not valid JSON"):
        store.load(ID)


# -- the cache of parsed records ---------------------------------------------------------


def test_a_loaded_record_is_the_callers_own(store: StateStore) -> None:
    store.save_created(ContainerRecord(ID, "bot", "busybox", cgroup_paths={"pids": "/a/" + ID}))
    first = store.load(ID)
    first.status = ContainerState.RUNNING
    first.cgroup_paths["memory"] = "/b/" + ID
    first.warnings.append("changed")
    again = store.load(ID)  # from the cache: the file did not change
    assert again.status is ContainerState.CREATED
    assert again.cgroup_paths == {"pids": "/a/" + ID} and again.warnings == []


def test_every_write_is_seen_even_of_the_same_size(store: StateStore) -> None:
    # Back to back, within one clock tick, same length: (inode, mtime, size) of each
    # write must tell them apart though inode numbers are reused (write_json_atomic
    # stamps the mtime to the nanosecond where the kernel's may be a tick old).
    store.save_created(ContainerRecord(ID, "bot", "busybox"))
    for pid in range(10, 60):
        store.save(ContainerRecord(ID, "bot", "busybox", pid=pid), durable=False)
        assert store.load(ID).pid == pid


def test_a_file_changed_in_place_is_read_again(store: StateStore) -> None:
    store.save_created(ContainerRecord(ID, "bot", "busybox", pid=41))
    assert store.load(ID).pid == 41
    path = store.directory(ID) / "state.json"
    path.write_text(path.read_text().replace('"pid": 41', '"pid": 42'))  # same size
    assert store.load(ID).pid == 42
    path.write_text("{")
    with pytest.raises(DamagedRecordError):
        store.load(ID)


def test_ids_lists_directories_with_a_record(store: StateStore) -> None:
    store.save_created(ContainerRecord(ID, "bot", "busybox"))
    store.directory("0d" + "4" * 62).mkdir()  # a create under way: no state.json yet
    (store.containers / f".removing-{'0e' + '5' * 62}").mkdir()
    assert store.ids() == [ID]


def test_records_removed_elsewhere_leave_the_cache_at_the_next_listing(
    store: StateStore,
) -> None:
    # An --rm container's monitor removes it in its own process: the engine's cache
    # must not keep it (engine memory flat as containers come and go).
    store.save_created(ContainerRecord(ID, "bot", "busybox"))
    store.load(ID)
    assert ID in store._parsed
    shutil.rmtree(store.directory(ID))
    assert store.ids() == []
    assert store._parsed == {}

"""Issue 11, item 10: a corrupt or hostile ``state.json``.

One damaged record must not make ``ps -a`` fail for every container: it is named,
by path, and the others list. Nothing of it is used before it is checked (the id
against its directory's name, the name, the numbers, the cgroup paths), so an id
like ``../../../tmp/x`` builds no path, and ``rm -f`` still removes it. A record
pointing at a host process gets no signal from ``kill``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from lifecycle_support import Containers, codex32, containers  # noqa: F401 - fixture

from codex32 import ContainerConfig, DamagedRecordError

pytestmark = pytest.mark.root


def _created(containers: Containers, name: str) -> str:
    config = ContainerConfig(image="busybox", command=["true"], name=name, network="none")
    return containers.create(config).id


def _state(storage_dir: Path, container_id: str) -> Path:
    return storage_dir / "containers" / container_id / "state.json"


@pytest.mark.parametrize(
    "damage",
    ["not json", "invalid-utf8", "array", "traversal id", "bad name", "bad pid", "foreign cgroup"],
)
def test_a_damaged_record_is_named_and_the_others_list(
    containers: Containers, storage_dir: Path, tmp_path: Path, damage: str
) -> None:
    good = _created(containers, f"good-{damage.replace(' ', '-')}")
    bad = _created(containers, f"bad-{damage.replace(' ', '-')}")
    path = _state(storage_dir, bad)
    record = json.loads(path.read_text())
    # Where a path built from a hostile id would lead: it must survive ``rm -f``.
    sentinel = (path.parent / "../../../tmp/x").resolve()
    hostile: bytes = {
        "not json": b"{not json",
        "invalid-utf8": b'{"id": "\xff"}',
        "array": b"[]",
        "traversal id": json.dumps(record | {"id": "../../../tmp/x"}).encode(),
        "bad name": json.dumps(record | {"name": "../../names/x"}).encode(),
        "bad pid": json.dumps(record | {"pid": "1; rm -rf /"}).encode(),
        "foreign cgroup": json.dumps(
            record | {"cgroup_paths": {"pids": "/sys/fs/cgroup/pids/user.slice"}}
        ).encode(),
    }[damage]
    path.write_bytes(hostile)
    made = [d for d in (sentinel.parent, sentinel) if not d.exists()]
    for directory in made:
        directory.mkdir()
    (sentinel / "keep").write_text("keep")
    try:
        listed = codex32(storage_dir, "ps", "-a")
        assert listed.returncode == 0, listed
        assert good[:12] in listed.stdout, listed
        assert bad[:12] not in listed.stdout, listed
        assert str(path) in listed.stderr and "damaged" in listed.stderr, listed.stderr
        assert len(listed.stderr.strip().splitlines()) == 1, listed.stderr
        with pytest.raises(DamagedRecordError, match="damaged container record"):
            containers.engine.containers.get(bad)
        refused = codex32(storage_dir, "rm", bad)  # without -f: the error says what to do
        assert refused.returncode != 0 and f"rm -f {bad}" in refused.stderr, refused
        removed = codex32(storage_dir, "rm", "-f", bad)
        assert removed.returncode == 0, removed
        assert not path.parent.exists()
        assert (sentinel / "keep").read_text() == "keep", "rm -f followed the hostile id"
        assert [c.id for c in containers.engine.containers.list(all=True)] == [good]
    finally:
        (sentinel / "keep").unlink(missing_ok=True)
        for directory in reversed(made):
            directory.rmdir()


def test_kill_never_signals_a_host_process_a_record_names(
    containers: Containers, storage_dir: Path
) -> None:
    container_id = _created(containers, "forged-pid")
    host = subprocess.Popen(["sleep", "600"])
    try:
        with open(f"/proc/{host.pid}/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        path = _state(storage_dir, container_id)
        record = json.loads(path.read_text())
        forged = {"status": "running", "pid": host.pid, "pid_start_time": start}
        path.write_text(json.dumps(record | forged))
        killed = codex32(storage_dir, "kill", container_id)
        assert killed.returncode != 0, killed
        assert host.poll() is None, "kill signalled a host process named in a record"
    finally:
        host.kill()
        host.wait()
        path.write_text(json.dumps(record))  # so that the teardown removes it cleanly

"""Resource flags, ``stats``, ``top`` and ``doctor`` through the real ``codex32`` program."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import assert_nothing_new, root_disk, snapshot

from codex32 import ContainerEngine, ContainerNotFoundError
from codex32._cgroups.detect import host_info

pytestmark = pytest.mark.root

CODEX32 = str(Path(sys.executable).with_name("codex32"))
MIB = 1 << 20
MEMORY_HOG = "chunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))\n"
_OUR_VARIABLES = (
    "CODEX32_STORAGE_DIR",
    "CONTAINER_STORAGE_DIR",
    "CODEX32_ISOLATION_LEVEL",
    "CONTAINER_ISOLATION_LEVEL",
)


def codex32(storage_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUR_VARIABLES}
    env["CODEX32_STORAGE_DIR"] = str(storage_dir)
    return subprocess.run(
        [CODEX32, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _need_cgroups(engine: ContainerEngine, *controllers: str) -> None:
    driver = engine._cgroups.driver()
    if driver is None:
        pytest.skip(f"no cgroup driver: {engine._cgroups.unavailable}")
    missing = [c for c in controllers if c not in driver.controllers()]
    if missing:
        pytest.skip(f"no {', '.join(missing)} controller for containers")


@contextlib.contextmanager
def running(engine: ContainerEngine, storage_dir: Path, *run_args: str) -> Iterator[str]:
    """``codex32 run -d --name NAME RUN_ARGS``; yields NAME; ``rm -f`` at the end."""
    name = f"cli-res-{uuid.uuid4().hex[:8]}"
    try:
        proc = codex32(storage_dir, "run", "-d", "--name", name, *run_args)
        assert proc.returncode == 0, proc.stderr
        yield name
    finally:
        codex32(storage_dir, "rm", "-f", name)
        with contextlib.suppress(ContainerNotFoundError):
            engine.containers.get(name).remove(force=True)


def test_run_memory_hog_exits_137(engine: ContainerEngine, storage_dir: Path) -> None:
    _need_cgroups(engine, "memory")
    before = snapshot(storage_dir)
    proc = codex32(
        storage_dir, "run", "--rm", "-m", "32m", "--memory-swap", "32m", "python", "--",
        "python3", "-c", MEMORY_HOG,
    )  # fmt: skip
    assert proc.returncode == 137, proc.stderr
    assert "Traceback" not in proc.stderr
    # --rm: the monitor removes the container once the CLI has let go
    deadline = time.monotonic() + 10
    while snapshot(storage_dir).containers - before.containers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_nothing_new(before, storage_dir)


def test_stats_no_stream_prints_a_row(engine: ContainerEngine, storage_dir: Path) -> None:
    _need_cgroups(engine, "memory", "pids")
    with running(
        engine, storage_dir, "-m", "64m", "--pids-limit", "20", "busybox", "--", "sleep", "1000"
    ) as name:
        short_id = engine.containers.get(name).short_id
        proc = codex32(storage_dir, "stats", "--no-stream", name)
        assert proc.returncode == 0, proc.stderr
        header, *rows = proc.stdout.splitlines()
        assert header.split()[:3] == ["CONTAINER", "ID", "NAME"]
        assert len(rows) == 1, proc.stdout
        row = rows[0].split()
        assert row[:2] == [short_id, name]
        assert row[2].endswith("%")
        assert "/ 64.0MiB" in rows[0], rows[0]

        proc = codex32(storage_dir, "stats", "--no-stream", "--json", name)
        assert proc.returncode == 0, proc.stderr
        (record,) = json.loads(proc.stdout)
        assert record["name"] == name
        assert record["memory_limit_bytes"] == 64 * MIB
        assert record["memory_usage_bytes"] > 0
        assert (record["pids"], record["pids_limit"]) == (1, 20)
        assert 0 <= record["cpu_percent"] < 50  # sleep does not spin


def test_top_lists_the_command(engine: ContainerEngine, storage_dir: Path) -> None:
    _need_cgroups(engine, "pids")
    with running(engine, storage_dir, "busybox", "--", "sleep", "1000") as name:
        pid = engine.containers.get(name).record.pid
        proc = codex32(storage_dir, "top", name)
        assert proc.returncode == 0, proc.stderr
        header, *rows = proc.stdout.splitlines()
        assert header.split() == ["PID", "PPID", "USER", "RSS", "COMMAND"]
        assert [(r.split()[0], r.split()[-2:]) for r in rows] == [(str(pid), ["sleep", "1000"])]


def test_pause_and_unpause(engine: ContainerEngine, storage_dir: Path) -> None:
    _need_cgroups(engine)
    with running(engine, storage_dir, "busybox", "--", "sleep", "1000") as name:
        assert codex32(storage_dir, "pause", name).returncode == 0
        assert engine.containers.get(name).status == "paused"
        again = codex32(storage_dir, "pause", name)
        assert again.returncode != 0 and "paused" in again.stderr
        assert codex32(storage_dir, "unpause", name).returncode == 0
        assert engine.containers.get(name).status == "running"


def test_doctor_names_the_driver_and_controllers(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    info = host_info()
    proc = codex32(storage_dir, "doctor")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"cgroup layout: {info.layout}" in lines
    driver = engine._cgroups.driver()
    if driver is None:
        assert "cgroup driver: none (limits fall back to rlimits)" in lines
        return
    assert f"cgroup driver: {driver.version}" in lines
    usable = next(line for line in lines if line.startswith("controllers usable for containers:"))
    listed = usable.split(":", 1)[1].replace(",", " ").split()
    assert sorted(listed) == sorted(driver.controllers())
    if info.layout == "hybrid":
        assert driver.version == "v1"
        assert {"cpu", "memory", "pids"} <= set(listed)


def test_device_throttle_flags_reach_the_cgroup(engine: ContainerEngine, storage_dir: Path) -> None:
    """The four --device-* flags, Docker's syntax, land as the kernel's per-device rules."""
    driver = engine._cgroups.driver()
    if driver is None or not {"blkio", "io"} & driver.controllers():
        pytest.skip("no blkio (v2: io) controller for containers")
    disk, number = root_disk()
    flags = [
        "--device-read-bps", f"{disk}:2mb", "--device-write-bps", f"{disk}:512kb",
        "--device-read-iops", f"{disk}:200", "--device-write-iops", f"{disk}:100",
    ]  # fmt: skip
    with running(engine, storage_dir, *flags, "busybox", "--", "sleep", "1000") as name:
        record = engine.containers.get(name).record
        if "unified" in record.cgroup_paths:
            rules = Path(record.cgroup_paths["unified"], "io.max").read_text().splitlines()
            line = next(r for r in rules if r.startswith(f"{number} "))
            assert line.split()[1:] == [
                f"rbps={2 * MIB}",
                f"wbps={512 << 10}",
                "riops=200",
                "wiops=100",
            ]
        else:
            blkio = Path(record.cgroup_paths["blkio"])
            found = {
                kind: (blkio / f"blkio.throttle.{kind}_device").read_text().strip()
                for kind in ("read_bps", "write_bps", "read_iops", "write_iops")
            }
            assert found == {
                "read_bps": f"{number} {2 * MIB}",
                "write_bps": f"{number} {512 << 10}",
                "read_iops": f"{number} 200",
                "write_iops": f"{number} 100",
            }
        proc = codex32(storage_dir, "stats", "--no-stream", "--json", name)
        assert proc.returncode == 0, proc.stderr
        (stats,) = json.loads(proc.stdout)
        assert stats["block_read_bytes"] >= 0 and stats["block_write_bytes"] >= 0

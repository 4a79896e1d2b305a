"""What a hostile container does with what it is given: links in its writable layer
that ``export`` and ``rm`` must not follow, setuid files in a volume, fork bombs,
memory hogs, filling its tmpfs and writable layer, log floods.

Each test fails if the attack works. The default pids limit, STRICT's sized /tmp and
the default log size hold them; the writable layer has no quota (not held, a strict
xfail: see docs/reliability.md).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from helpers import host_tmpdir, output_of, sh
from lifecycle_support import eventually

from codex32 import (
    ContainerConfig,
    ContainerEngine,
    IsolationType,
    ResourceLimits,
    TmpfsMount,
    Volume,
)
from codex32.config.container import DEFAULT_PIDS_LIMIT

pytestmark = pytest.mark.root


def test_export_and_rm_do_not_follow_links_planted_in_the_writable_layer(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """Absolute links in ``upper/`` name host paths when read from the host side."""
    with host_tmpdir() as host:
        sentinel = host / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep").write_text("host data")
        config = ContainerConfig(
            image="busybox", network="none",
            command=["sh", "-c", f"ln -s {sentinel} /dirlink; ln -s {sentinel}/keep /filelink;"
                                 " ln -s /etc/shadow /shadow"],
        )  # fmt: skip
        container = engine.containers.run_detached(config)
        try:
            assert container.wait(timeout=20) == 0
            tar_path = host / "export.tar"
            container.export(tar_path)
            with tarfile.open(tar_path) as tar:
                members = {m.name.lstrip("./"): m for m in tar.getmembers()}
                for name in ("dirlink", "filelink", "shadow"):
                    assert members[name].issym(), f"{name} was followed into the export"
                assert not any(n.startswith("dirlink/") for n in members)
        finally:
            container.remove(force=True)
        assert (sentinel / "keep").read_text() == "host data", "rm followed a planted link"


def test_a_setuid_file_made_in_a_volume_gives_no_privilege(engine: ContainerEngine) -> None:
    """Root in one container makes a setuid-root copy of python in a volume; a
    non-root user of a later container runs it and stays itself (no_new_privs)."""
    with host_tmpdir() as vol:
        os.chmod(vol, 0o777)
        volume = Volume(source=str(vol), target="/vol")
        output_of(engine, sh("cp /usr/bin/python3 /vol/py && chmod 4755 /vol/py",
                             image="python", network="none", volumes=[volume]))  # fmt: skip
        assert (vol / "py").stat().st_mode & 0o4000
        euid = output_of(engine, sh("/vol/py -c 'import os; print(os.geteuid())'",
                                    image="python", network="none", user="1000",
                                    volumes=[volume]))  # fmt: skip
        assert euid.strip() == "1000"


def test_strict_setuid_files_in_a_volume_belong_to_an_unprivileged_host_uid(
    engine: ContainerEngine,
) -> None:
    with host_tmpdir() as vol:
        os.chmod(vol, 0o777)
        output_of(engine, sh("cp /bin/busybox /vol/b && chmod 4755 /vol/b",
                             isolation=IsolationType.STRICT, network="none",
                             volumes=[Volume(source=str(vol), target="/vol")]))  # fmt: skip
        assert (vol / "b").stat().st_uid == engine.settings.userns_uid_base


def test_a_fork_bomb_stops_at_the_pids_limit(engine: ContainerEngine) -> None:
    """A bomb of sleeping children: the cgroup says forks hit the limit and never more
    than the limit run; the engine removes the whole lot. The bomb runs beside PID 1:
    a shell whose fork fails may exit, and an exited container gives its cgroup back
    (the counters with it)."""
    bomb = "(while true; do sleep 30 & done) 2>/dev/null & exec sleep 60"
    config = ContainerConfig(image="busybox", network="none", command=["sh", "-c", bomb],
                             resources=ResourceLimits(pids_limit=40))  # fmt: skip
    container = engine.containers.run_detached(config)
    try:
        pids = Path(container.record.cgroup_paths["pids"])
        assert eventually(lambda: _refusals(pids) > 0, 20), "no fork was refused"
        assert int((pids / "pids.current").read_text()) <= 40
    finally:
        container.remove(force=True)


def _refusals(pids: Path) -> int:
    """How many forks the pids controller refused (``pids.events``: ``max N``)."""
    try:
        return int((pids / "pids.events").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def test_a_container_has_a_pids_limit_by_default(engine: ContainerEngine) -> None:
    """No --pids-limit: the container's pids cgroup still caps it (podman's 2048)."""
    container = engine.containers.run_detached(sh("sleep 30", network="none"))
    try:
        pids = Path(container.record.cgroup_paths["pids"])
        assert (pids / "pids.max").read_text().strip() == str(DEFAULT_PIDS_LIMIT)
    finally:
        container.remove(force=True)


def test_a_memory_hog_is_killed_at_its_limit(engine: ContainerEngine) -> None:
    config = sh("dd if=/dev/zero of=/dev/null bs=200M count=1", network="none",
                resources=ResourceLimits(memory_bytes=32 * 1024 * 1024))  # fmt: skip
    result = engine.containers.run(config)
    assert result.exit_code in (137, 1), result  # OOM-killed, or the allocation refused
    assert b"200+0 records" not in result.error_output


def test_a_tmpfs_holds_its_size(engine: ContainerEngine) -> None:
    out = output_of(engine, sh(
        "dd if=/dev/zero of=/t/fill bs=1k count=4096 2>/dev/null; du -k /t/fill | cut -f1",
        network="none", tmpfs=[TmpfsMount.parse("/t:size=1m")],
    ))  # fmt: skip
    assert int(out.split()[-1]) <= 1024


def test_strict_tmp_is_sized_by_default(engine: ContainerEngine) -> None:
    out = output_of(engine, sh("df -k /tmp | tail -1", isolation=IsolationType.STRICT))
    size_kb = int(out.split()[1])
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    assert size_kb < total_kb // 4, f"/tmp is {size_kb} kB of {total_kb} kB RAM"


@pytest.mark.xfail(reason="not held: the writable layer has no quota (docs/reliability.md)",
                   strict=True)  # fmt: skip
def test_the_writable_layer_cannot_fill_the_storage_disk(engine: ContainerEngine) -> None:
    """64 MiB written to the root must hit a quota (there is none: overlay on the host's
    filesystem); the file is removed with the container either way."""
    out = output_of(engine, sh(
        "dd if=/dev/zero of=/fill bs=1M count=64 2>/dev/null; du -m /fill | cut -f1",
        network="none",
    ))  # fmt: skip
    assert int(out.split()[-1]) < 64


def test_a_log_flood_is_held_by_rotation(engine: ContainerEngine, storage_dir: Path) -> None:
    config = ContainerConfig(
        image="busybox", network="none", log_max_size=65536, log_max_files=2,
        # (not ``yes | head``: it spins on EPIPE while SIGPIPE is ignored, issue 10)
        command=["sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' a | fold -w 99"],
    )  # fmt: skip
    container = engine.containers.run_detached(config)
    try:
        assert container.wait(timeout=60) == 0
        directory = storage_dir / "containers" / container.id
        used = sum(p.stat().st_size for p in directory.glob("container.log*"))
        assert used <= 2 * 65536 + 4096, f"{used} bytes of logs kept"
    finally:
        container.remove(force=True)


def test_logs_rotate_by_default() -> None:
    assert ContainerConfig(image="busybox").log_max_size is not None

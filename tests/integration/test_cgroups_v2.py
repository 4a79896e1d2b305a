"""cgroup v2 driver against the real kernel; runs inside the VM of tests/vm/run_v2.sh.

The development and CI hosts carry no controllers on their v2 tree, so on them this
module skips (``test_cgroups_v2_vm.py`` boots the VM that runs it). Inside the VM
the runner sets ``CODEX32_REQUIRE_V2=1``, which turns the skip into a failure: the
VM run must really exercise v2. Same checks as v1, kept short, plus the
"no internal processes" rule on a real kernel.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cgroup_checks import (
    check_cpu,
    check_destroy,
    check_device_granted,
    check_devices,
    check_freeze,
    check_kill_all,
    check_oom,
    check_pids,
)
from helpers import SESSION_TAG

from codex32._cgroups.detect import detect_driver, host_info
from codex32._cgroups.v2 import WANTED, V2Cgroup, V2Driver
from codex32._linux import syscalls
from codex32.errors import CgroupError

pytestmark = pytest.mark.root


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    info = host_info()
    missing = [c for c in ("cpu", "memory", "pids") if c not in info.v2_controllers]
    if info.layout != "v2" or missing:
        return (
            f"no cgroup v2 controllers here (layout {info.layout}, v2 offers "
            f"{', '.join(info.v2_controllers) or 'nothing'}): tests/vm/run_v2.sh runs this in a VM"
        )
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[V2Driver]:
    reason = _skip_reason()
    if reason:
        if os.environ.get("CODEX32_REQUIRE_V2") == "1":
            pytest.fail(f"CODEX32_REQUIRE_V2=1 but {reason}")
        pytest.skip(reason)
    driver = V2Driver(f"{SESSION_TAG}-{uuid.uuid4().hex[:6]}")
    try:
        yield driver
    finally:
        for name in driver.names():
            driver.open(name).destroy(kill=True)
        driver.prune()
        assert not os.path.exists(driver.base_dir), f"cgroup left behind: {driver.base_dir}"


@pytest.fixture
def group(driver: V2Driver, request: pytest.FixtureRequest) -> Iterator[V2Cgroup]:
    group = driver.create(request.node.name)
    try:
        yield group
    finally:
        if os.path.exists(group.paths["unified"]):
            group.destroy(kill=True)


def test_detected_and_delegated(driver: V2Driver, group: V2Cgroup) -> None:
    assert detect_driver().version == "v2"
    enabled = Path(driver.base_dir, "cgroup.subtree_control").read_text().split()
    offered = Path(driver.base_dir, "cgroup.controllers").read_text().split()
    assert {c for c in WANTED if c in offered} <= set(enabled)
    for name in ("memory.max", "pids.max", "cpu.max", "cgroup.freeze"):
        assert Path(group.paths["unified"], name).exists(), name


def test_memory_hog_is_oom_killed_and_reported(group: V2Cgroup) -> None:
    print(f"oom: {check_oom(group)}")


def test_pids_limit_stops_a_fork_loop(group: V2Cgroup) -> None:
    print(f"pids: {check_pids(group)}")


def test_half_a_cpu(group: V2Cgroup) -> None:
    print(f"cpu: {check_cpu(group):.3f} cores under cpus=0.5")


def test_freeze_stops_progress_and_thaw_resumes(group: V2Cgroup) -> None:
    print(f"freeze: {check_freeze(group)}")


def test_kill_all_reaches_a_double_forked_grandchild(group: V2Cgroup) -> None:
    print(f"kill_all: grandchild {check_kill_all(group)} killed")


def test_destroy_removes_the_directory(group: V2Cgroup) -> None:
    check_destroy(group)


def test_engine_cgroup_with_processes_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    """An engine whose own (non-root) cgroup holds processes gets a clear error."""
    if _skip_reason():
        pytest.skip(_skip_reason() or "")
    busy = Path("/sys/fs/cgroup", f"codex32-busy-{uuid.uuid4().hex[:6]}")
    busy.mkdir()
    try:
        with subprocess.Popen(["sleep", "60"]) as sleeper:
            try:
                (busy / "cgroup.procs").write_text(str(sleeper.pid))
                proc_cgroup = tmp_path / "cgroup"
                proc_cgroup.write_text(f"0::/{busy.name}\n")
                driver = V2Driver("codex32", proc_cgroup=str(proc_cgroup))
                with pytest.raises(CgroupError, match="holds 1 process") as caught:
                    driver.create("c1")
                assert "--cgroup-parent" in str(caught.value)
                assert (busy / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
                assert not (busy / "codex32").exists()
            finally:
                sleeper.kill()
    finally:
        for _ in range(100):
            try:
                busy.rmdir()
                break
            except OSError:
                time.sleep(0.02)


def test_devices_default_deny_and_a_grant(driver: V2Driver, group: V2Cgroup) -> None:
    print(f"devices: {check_devices(group)}")
    fresh = driver.create(f"{group.name}-2")
    try:
        print(f"granted: {check_device_granted(fresh)}")
    finally:
        fresh.destroy(kill=True)


def test_a_child_is_forked_straight_into_the_group(group: V2Cgroup) -> None:
    """clone3(CLONE_INTO_CGROUP) from Python, as the set-up process forks PID 1 on v2:
    the child starts in the group (no ``cgroup.procs`` write), runs Python as after
    ``os.fork``, and its exit status comes back; a bad descriptor is a clear error."""
    fd = os.open(group.paths["unified"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = syscalls.fork_into_cgroup(fd)
        if pid == 0:
            try:
                mine = Path("/proc/self/cgroup").read_text().strip()
                os._exit(0 if mine.endswith("/" + group.name) else 3)
            except BaseException:
                os._exit(4)
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with pytest.raises(OSError, match="clone3 into a cgroup"):
        syscalls.fork_into_cgroup(fd)  # closed

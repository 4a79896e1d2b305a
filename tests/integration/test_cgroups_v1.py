"""cgroup v1 driver against the real kernel: limits are enforced, not just written.

Runs on hosts that mount the controllers as v1 (the development and CI machines are
hybrid). Every cgroup is created beneath this process's own cgroups under a parent
unique to this run, and the module fixture fails the run if any is left behind.
"""

from __future__ import annotations

import os
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

from codex32._cgroups.detect import host_info
from codex32._cgroups.v1 import V1Cgroup, V1Driver
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError

pytestmark = pytest.mark.root


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    info = host_info()
    if "memory" not in info.v1_controllers:
        return f"no cgroup v1 memory controller on this host (layout {info.layout})"
    return None


@pytest.fixture(scope="module")
def driver() -> Iterator[V1Driver]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    driver = V1Driver(f"{SESSION_TAG}-{uuid.uuid4().hex[:6]}")
    bases = driver.base_dirs()
    try:
        yield driver
    finally:
        for name in driver.names():  # a test that failed half-way
            driver.open(name).destroy(kill=True)
        driver.prune()
        leaked = sorted({path for path in bases.values() if os.path.exists(path)})
        assert not leaked, f"cgroups left behind: {leaked}"


@pytest.fixture
def group(driver: V1Driver, request: pytest.FixtureRequest) -> Iterator[V1Cgroup]:
    group = driver.create(request.node.name.replace("[", "-").rstrip("]"))
    try:
        yield group
    finally:
        if any(os.path.exists(path) for path in group.paths.values()):
            group.destroy(kill=True)


def _need(driver: V1Driver, *controllers: str) -> None:
    missing = [c for c in controllers if c not in driver.controllers()]
    if missing:
        pytest.skip(f"no v1 {', '.join(missing)} controller on this host")


def test_created_beneath_own_cgroups(driver: V1Driver, group: V1Cgroup) -> None:
    own = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            own[controller] = path
    for controller, path in group.paths.items():
        own_dir = os.path.normpath(f"/sys/fs/cgroup/{controller}/{own[controller]}")
        assert os.path.dirname(path) == driver.base_dirs()[controller]
        assert path.startswith(own_dir + "/"), f"{path} is not beneath {own_dir}"
    cpuset = group.paths.get("cpuset")
    if cpuset:
        assert Path(cpuset, "cpuset.cpus").read_text().strip()
        assert Path(cpuset, "cpuset.mems").read_text().strip()


def test_memory_hog_is_oom_killed_and_reported(driver: V1Driver, group: V1Cgroup) -> None:
    _need(driver, "memory")
    figures = check_oom(group)
    print(f"oom: {figures}")


def test_pids_limit_stops_a_fork_loop(driver: V1Driver, group: V1Cgroup) -> None:
    _need(driver, "pids")
    figures = check_pids(group)
    print(f"pids: {figures}")


def test_half_a_cpu(driver: V1Driver, group: V1Cgroup) -> None:
    _need(driver, "cpu", "cpuacct")
    cores = check_cpu(group)
    print(f"cpu: {cores:.3f} cores under cpus=0.5")


def test_freeze_stops_progress_and_thaw_resumes(driver: V1Driver, group: V1Cgroup) -> None:
    _need(driver, "freezer")
    figures = check_freeze(group)
    print(f"freeze: {figures}")


def test_kill_all_reaches_a_double_forked_grandchild(driver: V1Driver, group: V1Cgroup) -> None:
    _need(driver, "freezer")
    grandchild = check_kill_all(group)
    print(f"kill_all: grandchild {grandchild} killed")


def test_destroy_removes_every_directory(driver: V1Driver, group: V1Cgroup) -> None:
    paths = check_destroy(group)
    assert len(paths) == len(set(driver.base_dirs().values()))


def test_unavailable_blkio_weight_and_host_files(driver: V1Driver, group: V1Cgroup) -> None:
    """blkio.weight is gone on current kernels: BFQ's file is used, or an error names it."""
    _need(driver, "blkio")
    blkio = group.paths["blkio"]
    if os.path.exists(f"{blkio}/blkio.weight") or os.path.exists(f"{blkio}/blkio.bfq.weight"):
        group.apply(ResourceLimits(blkio_weight=300))
        name = "blkio.weight" if os.path.exists(f"{blkio}/blkio.weight") else "blkio.bfq.weight"
        assert Path(blkio, name).read_text().split()[-1] == "300"
    else:
        with pytest.raises(CgroupError, match=r"blkio\.weight does not exist"):
            group.apply(ResourceLimits(blkio_weight=300))


def test_devices_default_deny_and_a_grant(driver: V1Driver, group: V1Cgroup) -> None:
    print(f"devices: {check_devices(group)}")
    # devices.list shows what was written: deny all, then Docker's allow lines
    listed = Path(group.paths["devices"], "devices.list").read_text().splitlines()
    assert listed[:3] == ["c *:* m", "b *:* m", "c 1:3 rwm"], listed
    fresh = driver.create(f"{group.name}-2")
    try:
        print(f"granted: {check_device_granted(fresh)}")
    finally:
        fresh.destroy(kill=True)

"""The in-memory driver keeps the real drivers' contract, so engine tests can trust it."""

from __future__ import annotations

import os
import signal

import pytest

from codex32._cgroups.containers import ContainerCgroups
from codex32._cgroups.driver import CgroupDriver, parse_cpu_list, requested
from codex32._cgroups.fake import ALL_CONTROLLERS, FakeCgroup, FakeDriver
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError


def test_fake_lifecycle_records_what_was_asked() -> None:
    driver: CgroupDriver = FakeDriver()
    group = driver.create("c1")
    with pytest.raises(CgroupError, match="already exists"):
        driver.create("c1")
    group.add_pid(10)
    group.add_pid(11)
    group.apply(ResourceLimits(memory_bytes="64m"))
    group.apply(ResourceLimits(pids_limit=5))  # merges: unset fields are left alone
    stats = group.stats()
    assert (stats.memory_limit_bytes, stats.pids_limit, stats.pids_current) == (64 << 20, 5, 2)
    group.freeze()
    assert group.is_frozen()
    group.thaw()
    with pytest.raises(CgroupError, match="still has processes"):
        group.destroy()
    group.kill_all(signal.SIGTERM)
    assert group.pids() == [10, 11]  # only SIGKILL empties the group
    group.destroy(kill=True)
    assert driver.names() == []
    with pytest.raises(CgroupError, match="no cgroup"):
        driver.open("c1")


def test_fake_oom_and_missing_controllers() -> None:
    driver = FakeDriver(available=frozenset({"cpu", "memory"}))
    group = driver.create("c1")
    group.add_pid(7)
    group.simulate_oom(7)
    assert (group.oom_killed(), group.oom_kill_count(), group.pids()) == (True, 1, [])
    with pytest.raises(CgroupError, match="pids controller is not available"):
        group.apply(ResourceLimits(pids_limit=3))
    with pytest.raises(CgroupError, match="freezer"):
        group.freeze()
    with pytest.raises(CgroupError, match="cgroup name"):
        driver.create("../x")


def test_fake_records_device_limits_and_needs_blkio() -> None:
    """Per-device limits need blkio (v2: io); an empty list asks for nothing."""
    limits = ResourceLimits.model_validate(
        {"device_write_bps": [{"path": "/dev/fake-a", "rate": 1 << 20}]},
        context={"stored": True},
    )
    group = FakeDriver().create("c1")
    group.apply(limits)
    group.apply(ResourceLimits(pids_limit=5))  # an empty device list leaves the rule alone
    assert [(d.path, d.rate) for d in group.limits.device_write_bps] == [("/dev/fake-a", 1 << 20)]
    assert requested(ResourceLimits()) == []
    assert requested(limits) == ["device_write_bps"]

    without = FakeDriver(available=ALL_CONTROLLERS - {"blkio"})
    with pytest.raises(CgroupError, match="blkio controller is not available"):
        without.create("c1").apply(limits)
    cgroups = ContainerCgroups("codex32", driver=without)
    assert cgroups.unenforceable(limits) == {
        "device_write_bps": "the blkio controller is not available"
    }
    assert cgroups.unenforceable(ResourceLimits()) == {}
    assert without.names() == ["c1"], "the probe cgroup is removed"
    # A v2 driver names the controller "io": that counts as blkio.
    with_io = FakeDriver(available=(ALL_CONTROLLERS - {"blkio"}) | {"io"})
    assert ContainerCgroups("codex32", driver=with_io).unenforceable(limits) == {}


def test_prepare_sets_the_device_rules_and_the_default_pids_limit() -> None:
    from codex32._cgroups.devices import DEFAULT_RULES
    from codex32.config.container import DEFAULT_PIDS_LIMIT

    driver = FakeDriver()
    cgroups = ContainerCgroups("codex32", driver=driver)
    group = cgroups.prepare("a" * 64, ResourceLimits(), DEFAULT_RULES)
    assert isinstance(group, FakeCgroup)
    assert group.devices == DEFAULT_RULES
    assert group.limits.pids_limit == DEFAULT_PIDS_LIMIT  # a fork bomb's stop
    group = cgroups.prepare("b" * 64, ResourceLimits(pids_limit=-1), None)
    assert isinstance(group, FakeCgroup)
    assert (group.devices, group.limits.pids_limit) == (None, -1)  # MINIMAL; unlimited
    no_pids = FakeDriver(available=ALL_CONTROLLERS - {"pids"})
    group = ContainerCgroups("codex32", driver=no_pids).prepare("c" * 64, ResourceLimits())
    assert isinstance(group, FakeCgroup)
    assert group.limits.pids_limit is None  # no controller: no default to enforce


def test_cpuset_outside_the_usable_cpus_is_unenforceable() -> None:
    cgroups = ContainerCgroups("codex32", driver=FakeDriver())
    usable = os.cpu_count() or 1
    assert cgroups.unenforceable(ResourceLimits(cpuset_cpus="0")) == {}
    found = cgroups.unenforceable(ResourceLimits(cpuset_cpus=f"0,{usable + 3}"))
    assert found["cpuset_cpus"].startswith(f"CPU(s) {usable + 3} are not available")


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0-3,8\n") == {0, 1, 2, 3, 8}
    assert parse_cpu_list("") == frozenset()

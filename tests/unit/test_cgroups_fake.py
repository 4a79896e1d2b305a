"""The in-memory driver keeps the real drivers' contract, so engine tests can trust it."""

from __future__ import annotations

import signal

import pytest

from codex32._cgroups.driver import CgroupDriver
from codex32._cgroups.fake import FakeDriver
from codex32.config import ResourceLimits
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

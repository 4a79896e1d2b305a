"""An in-memory cgroup driver for unit tests of engine logic (no root, no kernel).

It keeps the contract of the real drivers — names must be new, a missing controller
is a CgroupError, destroy refuses while processes remain, SIGKILL empties the group
— and records what was asked so tests can assert on it. It never signals a real
process: ``kill_all`` only records the signal and forgets the pids.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from codex32._cgroups._fs import check_name
from codex32._cgroups.devices import DeviceRule
from codex32._cgroups.driver import LIMIT_CONTROLLERS, CgroupStats, requested
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError

ALL_CONTROLLERS = frozenset({"cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio"})


@dataclass
class FakeCgroup:
    """One fake container cgroup; its public fields are the test's to read and set."""

    _name: str
    driver: FakeDriver
    members: list[int] = field(default_factory=list)
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    frozen: bool = False
    signals: list[int] = field(default_factory=list)
    oom_kills: int = 0
    cpu_usage_ns: int = 0
    memory_usage_bytes: int = 0
    destroyed: bool = False
    #: The allow list of set_devices (None: never set, the host's rules).
    devices: tuple[DeviceRule, ...] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def paths(self) -> Mapping[str, str]:
        return {c: f"/fake/{c}/{self._name}" for c in sorted(self.driver.available)}

    def _alive(self, step: str) -> None:
        if self.destroyed:
            raise CgroupError(f"cgroup {self._name} was destroyed", step=step)

    def rename(self, name: str) -> FakeCgroup:
        self._alive("rename")
        if name in self.driver.groups:
            raise CgroupError(f"cgroup {name} already exists", step="rename")
        self.driver.groups[name] = self.driver.groups.pop(self._name)
        self._name = name
        return self

    def add_pid(self, pid: int) -> None:
        self._alive("add_pid")
        if pid not in self.members:
            self.members.append(pid)

    def apply(self, limits: ResourceLimits) -> None:
        self._alive("apply")
        for name in requested(limits):
            controller = LIMIT_CONTROLLERS[name]
            if controller not in self.driver.available:
                raise CgroupError(
                    f"the {controller} controller is not available, so {name} cannot be set",
                    step="apply",
                )
        # Fields that are set replace earlier values; "stored": the paths were checked.
        update = {k: v for k, v in limits.model_dump(exclude_none=True).items() if v != []}
        merged = self.limits.model_dump(exclude_none=True) | update
        self.limits = ResourceLimits.model_validate(merged, context={"stored": True})

    def set_devices(self, rules: Sequence[DeviceRule]) -> None:
        self._alive("devices")
        self.devices = tuple(rules)

    def unsupported(self) -> dict[str, str]:
        return {
            field: f"the {controller} controller is not available"
            for field, controller in LIMIT_CONTROLLERS.items()
            if controller not in self.driver.available
            and not (controller == "blkio" and "io" in self.driver.available)
        }

    def usable_cpus(self) -> frozenset[int]:
        return frozenset(range(os.cpu_count() or 1))

    def freeze(self) -> None:
        self._alive("freeze")
        if "freezer" not in self.driver.available:
            raise CgroupError("the freezer controller is not available", step="freeze")
        self.frozen = True

    def thaw(self) -> None:
        self._alive("thaw")
        self.frozen = False

    def is_frozen(self) -> bool:
        return self.frozen

    def stats(self) -> CgroupStats:
        return CgroupStats(
            cpu_usage_ns=self.cpu_usage_ns,
            memory_usage_bytes=self.memory_usage_bytes,
            memory_limit_bytes=self.limits.memory_bytes,
            memory_peak_bytes=self.memory_usage_bytes,
            memory_failcnt=None,
            pids_current=len(self.members),
            pids_limit=self.limits.pids_limit,
            blkio_read_bytes=0,
            blkio_write_bytes=0,
            oom_kills=self.oom_kills,
        )

    def pids(self) -> list[int]:
        return sorted(self.members)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        self._alive("kill")
        self.signals.append(sig)
        if sig == signal.SIGKILL:
            self.members.clear()

    def oom_kill_count(self) -> int:
        return self.oom_kills

    def oom_killed(self) -> bool:
        return self.oom_kills > 0

    def simulate_oom(self, pid: int) -> None:
        """What the kernel does when *pid* hits memory.max: kill it, count it."""
        self.members.remove(pid)
        self.oom_kills += 1

    def destroy(self, *, kill: bool = False) -> None:
        if self.members and not kill:
            raise CgroupError(
                f"cgroup {self._name} still has processes {self.pids()}",
                step="destroy",
                hint="stop the container first, or remove it with --force",
            )
        if self.members:
            self.kill_all(signal.SIGKILL)
        self.destroyed = True
        self.driver.groups.pop(self._name, None)


class FakeDriver:
    """Keeps fake cgroups in a dict; *available* lists the controllers it pretends to have."""

    def __init__(self, available: frozenset[str] = ALL_CONTROLLERS) -> None:
        self.available = available
        self.groups: dict[str, FakeCgroup] = {}

    @property
    def version(self) -> str:
        return "fake"

    def controllers(self) -> frozenset[str]:
        return self.available

    def create(self, name: str) -> FakeCgroup:
        check_name(name)
        if name in self.groups:
            raise CgroupError(f"cgroup {name} already exists", step="create")
        group = FakeCgroup(name, self)
        self.groups[name] = group
        return group

    def open(self, name: str) -> FakeCgroup:
        if name not in self.groups:
            raise CgroupError(f"no cgroup named {name!r}", step="open")
        return self.groups[name]

    def names(self) -> list[str]:
        return sorted(self.groups)

    def prune(self) -> None:
        """Nothing to remove: the fake has no parent directories."""

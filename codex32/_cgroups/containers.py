"""Containers' cgroups as the engine sees them: place, limit, sample, pause, remove.

The drivers (``_cgroups``) know cgroup files; this module knows containers: one
cgroup per container, named by its id, beneath the engine's cgroup parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from codex32._cgroups.detect import CgroupHostInfo, detect_driver, host_info
from codex32._cgroups.devices import DeviceRule
from codex32._cgroups.driver import (
    LIMIT_CONTROLLERS,
    Cgroup,
    CgroupDriver,
    CgroupStats,
    parse_cpu_list,
    requested,
)
from codex32.config.container import DEFAULT_PIDS_LIMIT, ResourceLimits
from codex32.errors import CgroupError

log = logging.getLogger("codex32")


@dataclass(frozen=True)
class ContainerStats:
    """One sample of a container's usage (``codex32 stats``, ``Container.stats()``)."""

    time: float
    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_limit_bytes: int | None
    memory_peak_bytes: int | None
    pids: int
    pids_limit: int | None
    block_read_bytes: int
    block_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    oom_kills: int

    def cpu_percent(self, earlier: ContainerStats) -> float:
        """CPU use between two samples, in percent of one core (Docker's CPU %)."""
        elapsed = self.time - earlier.time
        if elapsed <= 0:
            return 0.0
        return 100.0 * (self.cpu_usage_ns - earlier.cpu_usage_ns) / (elapsed * 1e9)


@dataclass(frozen=True)
class CgroupReport:
    """What this host's cgroups offer containers, as ``codex32 doctor`` shows it."""

    host: CgroupHostInfo
    usable_controllers: list[str] | None  # None: no driver (see ``unavailable``)
    unavailable: str | None
    parent: str
    limits: list[tuple[str, bool, str]]  # (limit, enforceable, why)


@dataclass(frozen=True)
class LimitProbe:
    """Which limits this host can enforce (``codex32 doctor``, checked at create)."""

    unsupported: dict[str, str]  # limit field -> why it cannot be enforced
    cpus: frozenset[int]  # the CPUs a --cpuset-cpus may name

    def rows(self) -> list[tuple[str, bool, str]]:
        """``(limit, enforceable, why)`` for every limit, for doctor."""
        return [
            (field, field not in self.unsupported, self.unsupported.get(field, "ok"))
            for field in LIMIT_CONTROLLERS
        ]


def _dead_probe(name: str) -> bool:
    """A probe or pool cgroup (``probe-PID-HEX``, ``pool-PID-HEX``) left by an engine
    process that died with it."""
    parts = name.split("-")
    if len(parts) != 3 or parts[0] not in ("probe", "pool") or not parts[1].isdigit():
        return False
    return not os.path.exists(f"/proc/{parts[1]}")


def _cpu_text(cpus: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cpus))) or "none"


def set_limits(limits: ResourceLimits) -> list[str]:
    """The ResourceLimits fields that are set (and so must be enforced)."""
    return requested(limits)


class ContainerCgroups:
    """The engine's cgroup seam (the driver is detected on first use)."""

    def __init__(self, parent: str, driver: CgroupDriver | None = None) -> None:
        self._parent = parent
        self._driver = driver
        self._error: CgroupError | None = None
        self._probe: LimitProbe | None = None

    def driver(self) -> CgroupDriver | None:
        """The host's driver, or ``None`` (with the reason in ``unavailable``)."""
        if self._driver is None and self._error is None:
            try:
                self._driver = detect_driver(self._parent)
            except CgroupError as exc:
                self._error = exc
        return self._driver

    @property
    def unavailable(self) -> str | None:
        """Why there is no driver, if there is none."""
        self.driver()
        return str(self._error) if self._error else None

    def report(self) -> CgroupReport:
        """The host's cgroup facts, the usable controllers and each limit's verdict."""
        driver = self.driver()
        return CgroupReport(
            host=host_info(),
            usable_controllers=sorted(driver.controllers()) if driver is not None else None,
            unavailable=self.unavailable,
            parent=self._parent,
            limits=self.probe().rows(),
        )

    def probe(self) -> LimitProbe:
        """What each limit needs, checked on a throw-away cgroup (made and removed here).

        Per file, not per controller: a host may have the blkio controller without a
        weight file (no BFQ), the memory controller without swap accounting. Done
        once per engine object, before a container's directory, process or cgroup
        exists, so an unenforceable limit is refused (or dropped) at create.
        """
        if self._probe is not None:
            return self._probe
        driver = self.driver()
        if driver is None:
            reason = f"no cgroup driver: {self.unavailable}"
            return LimitProbe(dict.fromkeys(LIMIT_CONTROLLERS, reason), frozenset())
        name = f"probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            cgroup = driver.create(name)
        except CgroupError as exc:
            self._probe = LimitProbe(dict.fromkeys(LIMIT_CONTROLLERS, str(exc)), frozenset())
            return self._probe
        try:
            self._probe = LimitProbe(cgroup.unsupported(), cgroup.usable_cpus())
        finally:
            cgroup.destroy(kill=True)
        return self._probe

    def lacks_controller(self, controller: str) -> bool:
        """Whether the host has no driver, or the driver no *controller* (v1 name)."""
        driver = self.driver()
        have = driver.controllers() if driver is not None else frozenset()
        return controller not in have and not (controller == "blkio" and "io" in have)

    def unenforceable(self, limits: ResourceLimits) -> dict[str, str]:
        """Each set limit this host cannot enforce -> why (one line)."""
        fields = set_limits(limits)
        if not fields:
            return {}
        probe = self.probe()
        found = {f: probe.unsupported[f] for f in fields if f in probe.unsupported}
        if limits.cpuset_cpus is not None and "cpuset_cpus" not in found:
            outside = parse_cpu_list(limits.cpuset_cpus) - probe.cpus
            if outside:
                found["cpuset_cpus"] = (
                    f"CPU(s) {', '.join(map(str, sorted(outside)))} are not available to the "
                    f"engine's cgroup (it may use {_cpu_text(probe.cpus)})"
                )
        return found

    def prepare(
        self,
        container_id: str,
        limits: ResourceLimits,
        devices: Sequence[DeviceRule] | None = None,
    ) -> Cgroup | None:
        """Make the container's cgroup afresh with its limits, still empty.

        Called as a start begins, so that the directories and limit files are written
        while the container's processes are being forked; :meth:`place` then only
        moves PID 1 in. A cgroup of an earlier run (the monitor removes it at the exit;
        one survives a monitor that died) is removed first, with anything in it: limits
        are only ever written, never cleared, so a reused cgroup could keep a rule the
        config no longer has (a throttle on a device number that now names another disk).
        A config without a pids limit gets ``DEFAULT_PIDS_LIMIT`` (a fork bomb's stop).
        ``devices``: the allow list of device nodes (everything else denied), or
        ``None`` to keep the host's (MINIMAL). ``None`` when the host has no cgroup
        driver.
        """
        driver = self.driver()
        if driver is None:
            return None
        with contextlib.suppress(CgroupError):
            driver.open(container_id).destroy(kill=True)
        return self._limit(driver, driver.create(container_id), limits, devices)

    def _limit(
        self,
        driver: CgroupDriver,
        cgroup: Cgroup,
        limits: ResourceLimits,
        devices: Sequence[DeviceRule] | None,
    ) -> Cgroup:
        """Write a container's device rules and limits; on failure the cgroup goes."""
        if limits.pids_limit is None and "pids" in driver.controllers():
            limits = limits.model_copy(update={"pids_limit": DEFAULT_PIDS_LIMIT})
        try:
            if devices is not None:
                cgroup.set_devices(devices)
            if set_limits(limits):
                cgroup.apply(limits)
        except BaseException:
            with contextlib.suppress(CgroupError):
                cgroup.destroy(kill=True)
            raise
        return cgroup

    def forks_into(self) -> bool:
        """Whether PID 1 can be forked into its cgroup here (v2; see ``fork_target``)."""
        driver = self.driver()
        return driver is not None and driver.version == "v2"

    def fork_target(self, cgroup: Cgroup | None) -> int | None:
        """A descriptor of ``cgroup``'s directory for the set-up process to fork PID 1
        into (``clone3(CLONE_INTO_CGROUP)``: no move, no RCU grace period), on v2; None
        on v1, whose hierarchies are many (PID 1 is moved into each)."""
        driver = self.driver()
        if cgroup is None or driver is None or driver.version != "v2":
            return None
        return os.open(cgroup.paths["unified"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def hold(self, pid: int) -> Cgroup | None:
        """Put a pooled sandbox's PID 1 in a cgroup of its own (``pool-PID-HEX``), so
        that the move, and the RCU grace period it waits out, happen before any
        container asks; ``adopt`` makes it the container's. Only where cgroups can be
        renamed (v1); None elsewhere, and the claim moves PID 1 as a fresh start does.
        """
        driver = self.driver()
        if driver is None or driver.version != "v1":
            return None
        cgroup = driver.create(f"pool-{os.getpid()}-{secrets.token_hex(4)}")
        self.place(cgroup, pid)  # (on failure the cgroup goes)
        return cgroup

    def adopt(
        self,
        held: Cgroup,
        container_id: str,
        limits: ResourceLimits,
        devices: Sequence[DeviceRule] | None = None,
    ) -> Cgroup:
        """A held sandbox's cgroup renamed to the container's, with its limits written
        (as ``prepare`` writes them; the cgroup has had nothing but the waiting PID 1
        in it). A cgroup of an earlier run of the container is removed first."""
        driver = self.driver()
        assert driver is not None
        with contextlib.suppress(CgroupError):
            driver.open(container_id).destroy(kill=True)
        try:
            cgroup = held.rename(container_id)
        except BaseException:
            with contextlib.suppress(CgroupError):
                held.destroy(kill=True)
            raise
        return self._limit(driver, cgroup, limits, devices)

    def place(self, cgroup: Cgroup | None, pid: int) -> dict[str, str]:
        """Move ``pid`` into a prepared cgroup; its paths per controller ({} without one).

        On failure the cgroup is removed (with whatever got into it).
        """
        if cgroup is None:
            return {}
        try:
            cgroup.add_pid(pid)
        except BaseException:
            with contextlib.suppress(CgroupError):
                cgroup.destroy(kill=True)
            raise
        return dict(cgroup.paths)

    def handle(self, container_id: str) -> Cgroup | None:
        """The container's cgroup, if it has one."""
        driver = self.driver()
        if driver is None:
            return None
        try:
            return driver.open(container_id)
        except CgroupError:
            return None

    def destroy(self, container_id: str) -> None:
        """Kill whatever is left in the container's cgroup and remove it."""
        cgroup = self.handle(container_id)
        if cgroup is None:
            return
        cgroup.destroy(kill=True)

    def remove_orphans(self, known: set[str]) -> list[str]:
        """Remove container cgroups whose container is gone (after a crash)."""
        driver = self.driver()
        if driver is None:
            return []
        removed = []
        for name in driver.names():
            if (len(name) == 64 and name not in known) or _dead_probe(name):
                with contextlib.suppress(CgroupError):
                    self.destroy(name)
                    removed.append(name)
        return removed

    def stats(self, container_id: str, pid: int | None, *, network: bool = True) -> ContainerStats:
        """A sample of the container's counters (zeros where the host has no controller).

        ``network=False``: the container shares the host's network namespace, whose
        counters are the host's, not the container's; they are reported as zero.
        """
        cgroup = self.handle(container_id)
        raw = cgroup.stats() if cgroup is not None else _EMPTY
        rx, tx = _net_bytes(pid) if pid and network else (0, 0)
        return ContainerStats(
            time=time.time(),
            cpu_usage_ns=raw.cpu_usage_ns,
            memory_usage_bytes=raw.memory_usage_bytes,
            memory_limit_bytes=raw.memory_limit_bytes,
            memory_peak_bytes=raw.memory_peak_bytes,
            pids=raw.pids_current,
            pids_limit=raw.pids_limit,
            block_read_bytes=raw.blkio_read_bytes,
            block_write_bytes=raw.blkio_write_bytes,
            net_rx_bytes=rx,
            net_tx_bytes=tx,
            oom_kills=raw.oom_kills,
        )


_EMPTY = CgroupStats(0, 0, None, None, None, 0, None, 0, 0, 0)


def exited_stats(
    limits: ResourceLimits, cpu_usage_ns: int | None, memory_peak_bytes: int | None, oom_kills: int
) -> ContainerStats:
    """An exited container's stats, from its record: nothing in use, the last run's
    totals and the limits it ran under (its cgroup is gone)."""
    return ContainerStats(
        time=time.time(),
        cpu_usage_ns=cpu_usage_ns or 0,
        memory_usage_bytes=0,
        memory_limit_bytes=limits.memory_bytes,
        memory_peak_bytes=memory_peak_bytes,
        pids=0,
        pids_limit=limits.pids_limit,
        block_read_bytes=0,
        block_write_bytes=0,
        net_rx_bytes=0,
        net_tx_bytes=0,
        oom_kills=oom_kills,
    )


def _net_bytes(pid: int) -> tuple[int, int]:
    """Received and sent bytes of every interface but lo in PID's network namespace."""
    rx = tx = 0
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, data = line.partition(":")
                if name.strip() == "lo":
                    continue
                fields = data.split()
                rx += int(fields[0])
                tx += int(fields[8])
    except (OSError, IndexError, ValueError):
        pass
    return rx, tx

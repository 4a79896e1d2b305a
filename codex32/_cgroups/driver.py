"""The cgroup seam: one driver Protocol, one handle Protocol, the stats record.

The engine only talks to these Protocols, so it does not care whether the host
mounts cgroup v1 (``v1.py``), v2 (``v2.py``) or nothing real at all (``fake.py``).
``detect.detect_driver()`` picks the implementation for the host.

Placement rule (every driver): container cgroups live beneath the engine's own
cgroup in each hierarchy (read from ``/proc/self/cgroup``), under a relative
*parent* (Docker's ``--cgroup-parent``, default ``codex32``), never elsewhere: that is
delegation done right, and on a shared host the only place we may write.

Lifetime: ``create`` makes the directories, ``add_pid`` moves a process in before it
runs user code, ``apply`` writes the limits that are set (``None`` fields are left
alone), ``kill_all`` + ``destroy`` undo it all. Handles hold no OS resources, so
``open`` re-attaches to a container's cgroup from another process (CLI, monitor).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from codex32._cgroups.devices import DeviceRule
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError

#: CFS period used for ``--cpus`` (as Docker and runc).
CPU_PERIOD_US = 100_000

#: Which controller (v1 name) each ResourceLimits field needs; v2 calls blkio "io".
LIMIT_CONTROLLERS: Mapping[str, str] = {
    "cpus": "cpu",
    "cpu_shares": "cpu",
    "cpuset_cpus": "cpuset",
    "memory_bytes": "memory",
    "memory_swap_bytes": "memory",
    "memory_reservation_bytes": "memory",
    "pids_limit": "pids",
    "blkio_weight": "blkio",
    "device_read_bps": "blkio",
    "device_write_bps": "blkio",
    "device_read_iops": "blkio",
    "device_write_iops": "blkio",
}

#: Per-device throttle field -> (v1 blkio file, v2 io.max key).
THROTTLES: Mapping[str, tuple[str, str]] = {
    "device_read_bps": ("blkio.throttle.read_bps_device", "rbps"),
    "device_write_bps": ("blkio.throttle.write_bps_device", "wbps"),
    "device_read_iops": ("blkio.throttle.read_iops_device", "riops"),
    "device_write_iops": ("blkio.throttle.write_iops_device", "wiops"),
}


#: The files that enforce each limit (any one of a tuple will do, the first preferred):
#: whether a limit can be enforced depends on the file, not only on the controller.
V1_FILES: Mapping[str, tuple[str, ...]] = {
    "cpus": ("cpu.cfs_quota_us",),
    "cpu_shares": ("cpu.shares",),
    "cpuset_cpus": ("cpuset.cpus",),
    "memory_bytes": ("memory.limit_in_bytes",),
    "memory_swap_bytes": ("memory.memsw.limit_in_bytes",),
    "memory_reservation_bytes": ("memory.soft_limit_in_bytes",),
    "pids_limit": ("pids.max",),
    "blkio_weight": ("blkio.weight", "blkio.bfq.weight"),
    **{field: (files[0],) for field, files in THROTTLES.items()},
}
V2_FILES: Mapping[str, tuple[str, ...]] = {
    "cpus": ("cpu.max",),
    "cpu_shares": ("cpu.weight",),
    "cpuset_cpus": ("cpuset.cpus",),
    "memory_bytes": ("memory.max",),
    "memory_swap_bytes": ("memory.swap.max",),
    "memory_reservation_bytes": ("memory.low",),
    "pids_limit": ("pids.max",),
    "blkio_weight": ("io.bfq.weight", "io.weight"),
    **dict.fromkeys(THROTTLES, ("io.max",)),
}

#: Why a file may be missing when its controller is there.
_FILE_WHY: Mapping[str, str] = {
    "cpus": "the kernel has no CFS bandwidth control (CONFIG_CFS_BANDWIDTH)",
    "memory_swap_bytes": "the kernel does not account swap in the memory cgroup "
    "(boot with swapaccount=1)",
    "blkio_weight": "no I/O scheduler with cgroup weights is active (CFQ is gone since "
    "Linux 5.0; load BFQ: modprobe bfq, and select it in /sys/block/DEV/queue/scheduler)",
}


def missing_file_reason(field: str, files: tuple[str, ...], directory: str) -> str:
    """One line: which file is missing where, and why it may be."""
    why = _FILE_WHY.get(field, "the kernel does not offer this control")
    return f"no {' or '.join(files)} in the cgroups under {directory}: {why}"


def parse_cpu_list(text: str) -> frozenset[int]:
    """``0-3,8`` -> {0, 1, 2, 3, 8} (the kernel's cpuset list format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return frozenset(cpus)


@dataclass(frozen=True)
class CgroupStats:
    """One sample of a container's cgroup counters.

    Counters of a controller the host lacks read 0; a limit of ``None`` means
    unlimited; ``memory_peak_bytes``/``memory_failcnt`` are ``None`` where the
    kernel has no such file (peak: v2 before 5.19; failcnt: v2).
    """

    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_limit_bytes: int | None
    memory_peak_bytes: int | None
    memory_failcnt: int | None
    pids_current: int
    pids_limit: int | None
    blkio_read_bytes: int
    blkio_write_bytes: int
    oom_kills: int


class Cgroup(Protocol):
    """A container's cgroup (one directory per hierarchy on v1, one on v2)."""

    @property
    def name(self) -> str:
        """The container cgroup's name beneath the driver's parent."""
        ...

    @property
    def paths(self) -> Mapping[str, str]:
        """Directory per controller (v1) or ``{"unified": dir}`` (v2), for doctor/inspect."""
        ...

    def add_pid(self, pid: int) -> None:
        """Move *pid* in (all hierarchies); do it before the process runs user code."""
        ...

    def apply(self, limits: ResourceLimits) -> None:
        """Write every limit that is set; a limit the host cannot enforce is a CgroupError."""
        ...

    def rename(self, name: str) -> Cgroup:
        """The same cgroup, processes and all, under another name beside it (v1 only:
        the kernel refuses renames on the unified hierarchy). A pooled sandbox's
        cgroup becomes its container's so."""
        ...

    def set_devices(self, rules: Sequence[DeviceRule]) -> None:
        """Deny every device node but those ``rules`` allow (v1: devices.deny/allow;
        v2: a BPF device program). Done before PID 1 runs anything of the container's:
        before it joins, or (a pooled sandbox's) while it waits holding /dev/null."""
        ...

    def freeze(self) -> None:
        """Stop every process and return once the kernel reports the group frozen."""
        ...

    def thaw(self) -> None:
        """Let the processes run again."""
        ...

    def is_frozen(self) -> bool:
        """Whether the kernel reports the group frozen."""
        ...

    def stats(self) -> CgroupStats:
        """Read the counters (cpu, memory, pids, block I/O, OOM kills)."""
        ...

    def pids(self) -> list[int]:
        """Every process in the cgroup and its sub-cgroups, sorted."""
        ...

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process, double-forked ones too; SIGKILL also waits until empty."""
        ...

    def oom_kill_count(self) -> int:
        """How many processes the kernel's OOM killer killed in this cgroup."""
        ...

    def oom_killed(self) -> bool:
        """Whether the OOM killer killed anything in this cgroup."""
        ...

    def destroy(self, *, kill: bool = False) -> None:
        """Remove the directories; refuses while processes remain unless *kill*."""
        ...

    def unsupported(self) -> dict[str, str]:
        """Each limit field this cgroup cannot enforce -> why (one line)."""
        ...

    def usable_cpus(self) -> frozenset[int]:
        """The CPUs a cpuset limit may name here (the parent's effective cpus)."""
        ...


class CgroupDriver(Protocol):
    """Creates and finds container cgroups beneath the engine's parent cgroup."""

    @property
    def version(self) -> str:
        """``"v1"``, ``"v2"`` or ``"fake"``."""
        ...

    def controllers(self) -> frozenset[str]:
        """Controllers this driver can use for containers (v1 names; v2 has ``io``)."""
        ...

    def create(self, name: str) -> Cgroup:
        """Create the container cgroup *name*; it must not exist yet."""
        ...

    def open(self, name: str) -> Cgroup:
        """Attach to the existing container cgroup *name* (e.g. after an engine restart)."""
        ...

    def names(self) -> list[str]:
        """Names of the container cgroups under the parent (for reconciling)."""
        ...

    def prune(self) -> None:
        """Remove the (empty) parent directories this driver object created."""
        ...


def cpu_quota_us(cpus: float, period_us: int = CPU_PERIOD_US) -> int:
    """CFS quota for ``--cpus`` (runc: quota = cpus * period)."""
    return round(cpus * period_us)


def pids_max(limit: int) -> str:
    """pids.max's value: ``max`` for -1 (unlimited, ``--pids-limit -1``)."""
    return "max" if limit < 0 else str(limit)


def requested(limits: ResourceLimits) -> list[str]:
    """Names of the cgroup limits that are set (rlimit-only fields are not ours).

    An empty per-device list is unset, as ``None`` is for the other fields.
    """
    return [field for field in LIMIT_CONTROLLERS if getattr(limits, field) not in (None, [])]


def device_number(path: str) -> str:
    """``MAJ:MIN`` of the block device at *path*, read now (as runc does at start).

    Read at apply time, not at create: loop, dm and nvme numbers change across
    reboots and re-attachments, so a number stored at create could throttle another disk.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise CgroupError(
            f"cannot throttle {path}: {exc.strerror}",
            step="apply",
            path=path,
            errno=exc.errno,
            hint="the device went away since the container was created: attach it "
            "again, or recreate the container without that device limit",
        ) from exc
    if not stat.S_ISBLK(info.st_mode):
        raise CgroupError(
            f"cannot throttle {path}: it is no longer a block device",
            step="apply",
            path=path,
            hint="recreate the container with the disk's current device path",
        )
    return f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"


def throttle_rules(limits: ResourceLimits) -> list[tuple[str, str, int]]:
    """``(field, MAJ:MIN, rate)`` for every per-device limit, devices resolved now."""
    return [
        (field, device_number(item.path), item.rate)
        for field in THROTTLES
        for item in getattr(limits, field)
    ]


def signal_pids(pids: Iterable[int], sig: int) -> None:
    """Send *sig* to each pid, ignoring the ones that already went away."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

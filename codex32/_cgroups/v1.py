"""cgroup v1 driver: one hierarchy per controller (or per co-mounted controller set).

A container gets one directory per hierarchy, ``<own cgroup>/<parent>/<name>``, where
*own cgroup* is this process's path in that hierarchy (``/proc/self/cgroup``): on the
development hosts that is ``/process_api/<id>`` for memory and ``/`` for the rest.

Why plain file access and not cgroupspy (which the design card names): we read its
0.2.3 API and it does not fit.

* It has no ``pids`` and no ``freezer`` controller, two of the five we need.
* Its trees are built by walking a whole mount from ``/sys/fs/cgroup`` and, given
  ``sub_groups``, create that group in *every* hierarchy; we need one path per
  hierarchy (each hierarchy has a different "own cgroup") and must touch nothing else.
* ``Node.create_cgroup`` swallows ``EEXIST``, so a name clash would silently adopt
  another container's (or another tenant's) cgroup; we want ``mkdir`` to fail.
* ``IntegerFile`` maps ``-1`` to ``None`` but the kernel prints "unlimited" as
  9223372036854771712; the write-bps/iops file names carry a trailing space (a typo
  that makes them unusable); errors are bare ``OSError`` without the step; no types.

What it would add — a descriptor per file — is one line each here, so the driver uses
:class:`~codex32._cgroups._fs.CgroupFS`, which also gives the unit tests their seam.
The v2 tree of a hybrid host is not used: it carries no controllers there.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import os
import signal
from collections.abc import Mapping, Sequence

from codex32._cgroups._fs import (
    MOUNTINFO,
    PROC_CGROUP,
    V1_CONTROLLER_NAMES,
    CgroupFS,
    attempts,
    cgroup_mounts,
    check_name,
    check_parent,
    flat_keyed,
    make_levels,
    own_cgroups,
    parent_levels,
    procs_recursive,
    prune_dirs,
    remove_tree,
)
from codex32._cgroups.devices import DeviceRule
from codex32._cgroups.driver import (
    CPU_PERIOD_US,
    LIMIT_CONTROLLERS,
    THROTTLES,
    V1_FILES,
    CgroupStats,
    cpu_quota_us,
    missing_file_reason,
    parse_cpu_list,
    pids_max,
    signal_pids,
    throttle_rules,
)
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError

#: Hierarchies a container joins (devices: so a device policy has a place later).
MANAGED = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices")

MEMORY_LIMIT = "memory.limit_in_bytes"
MEMSW = "memory.memsw.limit_in_bytes"

#: v1 prints "no limit" as PAGE_COUNTER_MAX pages; anything this large is unlimited.
UNLIMITED_FLOOR = 1 << 62


class V1Cgroup:
    """A container's directories, one per v1 hierarchy."""

    def __init__(self, name: str, dirs: Mapping[str, str], fs: CgroupFS, timeout: float) -> None:
        self._name = name
        self._dirs = dict(dirs)
        self._fs = fs
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._name

    @property
    def paths(self) -> Mapping[str, str]:
        return dict(self._dirs)

    def _unique_dirs(self) -> list[str]:
        return sorted(set(self._dirs.values()))

    def _file(self, controller: str, filename: str, step: str) -> str:
        directory = self._dirs.get(controller)
        if directory is None:
            raise CgroupError(
                f"the v1 {controller} controller is not mounted, so {filename} cannot be used",
                step=step,
                hint=f"mount the {controller} hierarchy, or drop the limit that needs it",
            )
        return os.path.join(directory, filename)

    def _read(self, controller: str, filename: str, step: str) -> str:
        return self._fs.read(self._file(controller, filename, step), step).strip()

    def _write(self, controller: str, filename: str, value: str | int, step: str) -> None:
        self._fs.write(self._file(controller, filename, step), str(value), step)

    def _has(self, controller: str, filename: str) -> bool:
        directory = self._dirs.get(controller)
        return directory is not None and self._fs.exists(os.path.join(directory, filename))

    def add_pid(self, pid: int) -> None:
        for directory in self._unique_dirs():
            self._fs.write(os.path.join(directory, "cgroup.procs"), str(pid), "add_pid")

    def rename(self, name: str) -> V1Cgroup:
        check_name(name)
        done: list[tuple[str, str]] = []
        try:
            for directory in self._unique_dirs():
                target = os.path.join(os.path.dirname(directory), name)
                self._fs.rename(directory, target, "rename")
                done.append((directory, target))
        except BaseException:
            for old, new in reversed(done):
                with contextlib.suppress(OSError, CgroupError):
                    self._fs.rename(new, old, "rename")
            raise
        moved = dict(done)
        dirs = {controller: moved[path] for controller, path in self._dirs.items()}
        return V1Cgroup(name, dirs, self._fs, self._timeout)

    def apply(self, limits: ResourceLimits) -> None:
        """Check every file first, so a limit the host lacks fails before any write."""
        writes = self._limit_writes(limits)
        for controller, filename, _ in writes:
            self._require(controller, filename)
        pending = list(writes)
        while pending:
            controller, filename, value = pending.pop(0)
            try:
                self._write(controller, filename, value, "apply")
            except CgroupError as exc:
                # memory.limit_in_bytes <= memsw.limit_in_bytes must hold after each
                # write: raising both needs memsw first (runc's order), so retry so.
                swap = [w for w in pending if w[1] == MEMSW]
                if filename != MEMORY_LIMIT or exc.errno != errno_module.EINVAL or not swap:
                    raise
                pending.remove(swap[0])
                pending[:0] = [swap[0], (controller, filename, value)]

    def set_devices(self, rules: Sequence[DeviceRule]) -> None:
        """``a`` to devices.deny (the group starts with its parent's list), then one
        line per rule to devices.allow, as runc does on v1."""
        if "devices" not in self._dirs:
            raise CgroupError(
                "the v1 devices controller is not mounted, so the container's device "
                "policy cannot be enforced",
                step="devices",
                hint="mount the devices hierarchy (as Docker requires on v1), or use MINIMAL",
            )
        self._write("devices", "devices.deny", "a", "devices")
        for rule in rules:
            self._write("devices", "devices.allow", str(rule), "devices")

    def _limit_writes(self, limits: ResourceLimits) -> list[tuple[str, str, str]]:
        writes: list[tuple[str, str, int | str]] = []
        if limits.cpus is not None:
            writes.append(("cpu", "cpu.cfs_period_us", CPU_PERIOD_US))
            writes.append(("cpu", "cpu.cfs_quota_us", cpu_quota_us(limits.cpus)))
        if limits.cpu_shares is not None:
            writes.append(("cpu", "cpu.shares", limits.cpu_shares))
        if limits.cpuset_cpus is not None:
            writes.append(("cpuset", "cpuset.cpus", limits.cpuset_cpus))
        if limits.memory_bytes is not None:
            writes.append(("memory", MEMORY_LIMIT, limits.memory_bytes))
        if limits.memory_swap_bytes is not None:  # -1: unlimited
            writes.append(("memory", MEMSW, limits.memory_swap_bytes))
        if limits.memory_reservation_bytes is not None:
            writes.append(("memory", "memory.soft_limit_in_bytes", limits.memory_reservation_bytes))
        if limits.pids_limit is not None:
            writes.append(("pids", "pids.max", pids_max(limits.pids_limit)))
        if limits.blkio_weight is not None:
            # blkio.weight is CFQ's (gone since 5.0); BFQ's file is blkio.bfq.weight
            # with the same 10..1000 range: runc falls back to it the same way.
            name = "blkio.weight"
            if not self._has("blkio", name) and self._has("blkio", "blkio.bfq.weight"):
                name = "blkio.bfq.weight"
            writes.append(("blkio", name, limits.blkio_weight))
        # One "MAJ:MIN RATE" write per device: each write sets that device's rule only.
        for field, number, rate in throttle_rules(limits):
            writes.append(("blkio", THROTTLES[field][0], f"{number} {rate}"))
        return [(controller, name, str(value)) for controller, name, value in writes]

    def _require(self, controller: str, filename: str) -> None:
        path = self._file(controller, filename, "apply")
        if self._fs.exists(path):
            return
        if filename == MEMSW:
            raise CgroupError(
                f"{MEMSW} does not exist: this kernel does not account swap in the memory "
                "cgroup, so --memory-swap cannot be enforced",
                step="apply",
                path=path,
                errno=errno_module.ENOENT,
                hint="boot with swapaccount=1, or drop --memory-swap",
            )
        raise CgroupError(
            f"{filename} does not exist in {os.path.dirname(path)}: this kernel cannot "
            "enforce that limit",
            step="apply",
            path=path,
            errno=errno_module.ENOENT,
            hint="drop the limit, or use a kernel that has the file",
        )

    def unsupported(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for field, files in V1_FILES.items():
            controller = LIMIT_CONTROLLERS[field]
            directory = self._dirs.get(controller)
            if directory is None:
                found[field] = (
                    f"the v1 {controller} controller is not mounted where the engine's "
                    "cgroup can reach it"
                )
            elif not any(self._has(controller, name) for name in files):
                found[field] = missing_file_reason(field, files, os.path.dirname(directory))
        if "cpuset_cpus" not in found and not self.usable_cpus():
            found["cpuset_cpus"] = (
                f"the parent cpuset of {self._dirs['cpuset']} has no CPUs, so no cpuset "
                "can be given to a container"
            )
        return found

    def usable_cpus(self) -> frozenset[int]:
        if not self._has("cpuset", "cpuset.cpus"):
            return frozenset()
        return parse_cpu_list(self._read("cpuset", "cpuset.cpus", "probe"))

    def freeze(self) -> None:
        """Write FROZEN until the state reads FROZEN (FREEZING means not yet).

        Re-writing FROZEN while FREEZING is what runc does for tasks that were
        in an uninterruptible sleep when the first request arrived.
        """
        for _ in attempts(self._timeout):
            self._write("freezer", "freezer.state", "FROZEN", "freeze")
            if self._read("freezer", "freezer.state", "freeze") == "FROZEN":
                return
        self._write("freezer", "freezer.state", "THAWED", "freeze")
        raise CgroupError(
            f"cgroup {self._name} did not freeze within {self._timeout:.1f}s",
            step="freeze",
            path=self._dirs.get("freezer"),
            hint="a process may be stuck in the kernel (D state); retry, or kill the container",
        )

    def thaw(self) -> None:
        for _ in attempts(self._timeout):
            self._write("freezer", "freezer.state", "THAWED", "thaw")
            if self._read("freezer", "freezer.state", "thaw") == "THAWED":
                return
        raise CgroupError(f"cgroup {self._name} did not thaw", step="thaw")

    def is_frozen(self) -> bool:
        if not self._has("freezer", "freezer.state"):
            return False
        return self._read("freezer", "freezer.state", "stats") == "FROZEN"

    def pids(self) -> list[int]:
        found: set[int] = set()
        for directory in self._unique_dirs():
            found.update(procs_recursive(self._fs, directory))
        return sorted(found)

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """Freeze, signal everyone, thaw (runc's signalAllProcesses).

        Frozen processes cannot fork, so the list read while frozen is complete and
        their pids cannot be reused before the signal lands. Without a freezer (or
        if freezing times out) we signal in rounds until the cgroup is empty.
        """
        frozen = False
        if self._has("freezer", "freezer.state"):
            with contextlib.suppress(CgroupError):  # stuck freezing: signal anyway
                self.freeze()
                frozen = True
        try:
            signal_pids(self.pids(), sig)
        finally:
            if frozen:
                self.thaw()
        if sig == signal.SIGKILL:
            self._wait_empty(sig)

    def _wait_empty(self, sig: int) -> None:
        for _ in attempts(self._timeout):
            remaining = self.pids()
            if not remaining:
                return
            signal_pids(remaining, sig)
        raise CgroupError(
            f"processes {self.pids()} survived SIGKILL in cgroup {self._name}",
            step="kill",
            path=self._dirs.get("freezer") or self._unique_dirs()[0],
            hint="they may be stuck in the kernel (D state); retry later",
        )

    def oom_kill_count(self) -> int:
        if not self._has("memory", "memory.oom_control"):
            return 0
        values = flat_keyed(self._read("memory", "memory.oom_control", "stats"))
        return values.get("oom_kill", 0)  # the line exists since Linux 4.13

    def oom_killed(self) -> bool:
        return self.oom_kill_count() > 0

    def stats(self) -> CgroupStats:
        def number(controller: str, filename: str) -> int | None:
            if not self._has(controller, filename):
                return None
            return int(self._read(controller, filename, "stats"))

        def limit(controller: str, filename: str) -> int | None:
            if not self._has(controller, filename):
                return None
            text = self._read(controller, filename, "stats")
            value = -1 if text == "max" else int(text)
            return None if value < 0 or value >= UNLIMITED_FLOOR else value

        read_bytes, write_bytes = 0, 0
        for filename in (
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ):
            if self._has("blkio", filename):
                read_bytes, write_bytes = _blkio_bytes(self._read("blkio", filename, "stats"))
                break
        return CgroupStats(
            cpu_usage_ns=number("cpuacct", "cpuacct.usage") or 0,
            memory_usage_bytes=number("memory", "memory.usage_in_bytes") or 0,
            memory_limit_bytes=limit("memory", "memory.limit_in_bytes"),
            memory_peak_bytes=number("memory", "memory.max_usage_in_bytes"),
            memory_failcnt=number("memory", "memory.failcnt"),
            pids_current=number("pids", "pids.current") or 0,
            pids_limit=limit("pids", "pids.max"),
            blkio_read_bytes=read_bytes,
            blkio_write_bytes=write_bytes,
            oom_kills=self.oom_kill_count(),
        )

    def destroy(self, *, kill: bool = False) -> None:
        remaining = self.pids()
        if remaining and not kill:
            raise CgroupError(
                f"cgroup {self._name} still has processes {remaining}",
                step="destroy",
                path=self._unique_dirs()[0],
                hint="stop the container first, or remove it with --force",
            )
        if remaining:
            self.kill_all(signal.SIGKILL)
        for directory in self._unique_dirs():
            remove_tree(self._fs, directory, self._timeout)


class V1Driver:
    """Creates container cgroups in every managed v1 hierarchy beneath our own cgroup."""

    def __init__(
        self,
        parent: str = "codex32",
        *,
        mountinfo: str = MOUNTINFO,
        proc_cgroup: str = PROC_CGROUP,
        fs: CgroupFS | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._parent = check_parent(parent)
        self._fs = fs or CgroupFS()
        self._timeout = timeout
        self._created: list[str] = []
        own_by_set = {
            frozenset(key.split(",")) & V1_CONTROLLER_NAMES: path
            for key, path in own_cgroups(proc_cgroup).items()
            if key
        }
        # base directory (own cgroup / parent) -> (start dir, levels, controllers)
        self._hierarchies: dict[str, tuple[str, list[str], list[str]]] = {}
        seen: set[str] = set()
        for mount in cgroup_mounts(mountinfo):
            controllers = sorted((mount.controllers & set(MANAGED)) - seen)
            own_path = own_by_set.get(mount.controllers)
            if mount.fstype != "cgroup" or not controllers or own_path is None:
                continue
            try:
                start, levels = parent_levels(mount, own_path, self._parent)
            except CgroupError:
                continue  # another mount of the same hierarchy may show our cgroup
            seen.update(controllers)
            self._hierarchies[os.path.join(start, *levels)] = (start, levels, controllers)
        if not self._hierarchies:
            raise CgroupError(
                "no cgroup v1 controller is mounted where this process can reach its cgroup",
                step="detect",
                path=mountinfo,
                hint="mount the v1 controllers under /sys/fs/cgroup, or use the v2 driver",
            )

    @property
    def version(self) -> str:
        return "v1"

    def controllers(self) -> frozenset[str]:
        return frozenset(c for _, _, controllers in self._hierarchies.values() for c in controllers)

    def base_dirs(self) -> Mapping[str, str]:
        """The parent directory per controller (for doctor and leak checks)."""
        return {
            controller: base
            for base, (_, _, controllers) in self._hierarchies.items()
            for controller in controllers
        }

    def create(self, name: str) -> V1Cgroup:
        check_name(name)
        made: list[str] = []
        dirs: dict[str, str] = {}
        try:
            for base, (start, levels, controllers) in self._hierarchies.items():
                cpuset = "cpuset" in controllers
                self._created.extend(
                    make_levels(self._fs, start, levels, _copy_cpuset if cpuset else None)
                )
                path = os.path.join(base, name)
                self._fs.mkdir(path, "create")
                made.append(path)
                if cpuset:
                    _copy_cpuset(self._fs, path)
                dirs.update(dict.fromkeys(controllers, path))
        except BaseException:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    self._fs.rmdir(path)
            raise
        return V1Cgroup(name, dirs, self._fs, self._timeout)

    def open(self, name: str) -> V1Cgroup:
        check_name(name)
        dirs: dict[str, str] = {}
        for base, (_, _, controllers) in self._hierarchies.items():
            path = os.path.join(base, name)
            if self._fs.exists(path):
                dirs.update(dict.fromkeys(controllers, path))
        if not dirs:
            raise CgroupError(
                f"no cgroup named {name!r} under {sorted(self._hierarchies)}",
                step="open",
                hint="the container's cgroup was already removed",
            )
        return V1Cgroup(name, dirs, self._fs, self._timeout)

    def names(self) -> list[str]:
        found: set[str] = set()
        for base in self._hierarchies:
            found.update(self._fs.subdirs(base))
        return sorted(found)

    def prune(self) -> None:
        self._created = prune_dirs(self._fs, self._created)


def _copy_cpuset(fs: CgroupFS, path: str) -> None:
    """A new v1 cpuset has empty cpus/mems and no task may join until both are set."""
    parent = os.path.dirname(path)
    for filename in ("cpuset.cpus", "cpuset.mems"):
        target = os.path.join(path, filename)
        if fs.read(target, "create").strip():
            continue
        value = fs.read(os.path.join(parent, filename), "create").strip()
        fs.write(target, value, "create")


def _blkio_bytes(text: str) -> tuple[int, int]:
    """Sum the per-device "MAJ:MIN Read N" / "MAJ:MIN Write N" lines."""
    read_bytes = write_bytes = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            if parts[1] == "Read":
                read_bytes += int(parts[2])
            elif parts[1] == "Write":
                write_bytes += int(parts[2])
    return read_bytes, write_bytes

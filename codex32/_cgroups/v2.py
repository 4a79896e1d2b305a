"""cgroup v2 driver: one unified hierarchy.

Layout: ``<own cgroup>/<parent>/<name>``. ``<own cgroup>`` is where this process sits
(``0::/path`` in ``/proc/self/cgroup``), ``<parent>`` (default ``codex32``) is ours,
and container cgroups are the leaves. An absolute parent (Docker's ``--cgroup-parent
/x``) replaces ``<own cgroup>/<parent>`` with ``/x`` from the hierarchy's root.

The "no internal processes" rule: a non-root cgroup can enable controllers for its
children (``cgroup.subtree_control``) only while it holds no process itself. We
therefore keep processes only in the leaves and enable controllers on each level
from our own cgroup down to the parent:

* levels we create (``<parent>`` and its ancestors) never hold a process, so
  enabling there always works;
* a level that already exists (our own cgroup, always) gets its controllers
  enabled only if it already has them (a systemd ``Delegate=yes`` unit), if it is
  the root cgroup (exempt from the rule: the case in a VM or as a host service), or
  if it holds no process. Otherwise we stop with a CgroupError: making room would
  mean moving the engine, and processes we did not start, out of their cgroup,
  which we never do. The fix belongs to whoever starts the engine: give it a
  delegated sub-tree (``systemd-run --scope -p Delegate=yes``), or run it in a leaf
  and point ``--cgroup-parent /PATH`` at a sub-tree without processes.
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
    THROTTLES,
    V2_FILES,
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

#: Controllers we enable for container cgroups when the parent offers them.
WANTED = ("cpu", "cpuset", "io", "memory", "pids")


def shares_to_weight(shares: int) -> int:
    """cpu.shares (2..262144) -> cpu.weight (1..10000), the formula runc and crun use."""
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_to_io_weight(weight: int) -> int:
    """blkio.weight (10..1000) -> io.weight (1..10000), crun's conversion."""
    return 1 + ((weight - 10) * 9999) // 990


class V2Cgroup:
    """A container's directory in the unified hierarchy."""

    def __init__(self, name: str, path: str, fs: CgroupFS, timeout: float) -> None:
        self._name = name
        self._path = path
        self._fs = fs
        self._timeout = timeout

    @property
    def name(self) -> str:
        return self._name

    @property
    def paths(self) -> Mapping[str, str]:
        return {"unified": self._path}

    def _file(self, filename: str) -> str:
        return os.path.join(self._path, filename)

    def _has(self, filename: str) -> bool:
        return self._fs.exists(self._file(filename))

    def _read(self, filename: str, step: str) -> str:
        return self._fs.read(self._file(filename), step).strip()

    def _write(self, filename: str, value: str | int, step: str) -> None:
        self._fs.write(self._file(filename), str(value), step)

    def add_pid(self, pid: int) -> None:
        self._write("cgroup.procs", pid, "add_pid")

    def rename(self, name: str) -> V2Cgroup:
        raise CgroupError(
            "cgroups cannot be renamed on the unified (v2) hierarchy",
            step="rename",
            path=self._path,
            hint="make the cgroup under its final name",
        )

    def set_devices(self, rules: Sequence[DeviceRule]) -> None:
        """Attach a BPF device program built from ``rules`` (v2 has no devices files)."""
        from codex32._cgroups.devicefilter import device_program
        from codex32._linux import bpf

        try:
            program = bpf.load_device_program(device_program(rules))
            try:
                bpf.attach_device_program(self._path, program)
            finally:
                os.close(program)
        except OSError as exc:
            raise CgroupError(
                f"cannot apply the device policy to {self._path}: {exc.strerror or exc}",
                step="devices",
                path=self._path,
                errno=exc.errno,
                hint="the kernel needs CONFIG_CGROUP_BPF (as runc and Docker on v2 do)",
            ) from exc

    def apply(self, limits: ResourceLimits) -> None:
        """Check every file first, so a limit the host lacks fails before any write."""
        writes = self._limit_writes(limits)
        for filename, _ in writes:
            if not self._has(filename):
                raise CgroupError(
                    f"{filename} does not exist in {self._path}: the controller is not "
                    "enabled for this cgroup or the kernel cannot enforce that limit",
                    step="apply",
                    path=self._file(filename),
                    errno=errno_module.ENOENT,
                    hint="drop the limit, or enable the controller in the parent's "
                    "cgroup.subtree_control",
                )
        for filename, value in writes:
            self._write(filename, value, "apply")

    def _limit_writes(self, limits: ResourceLimits) -> list[tuple[str, str]]:
        writes: list[tuple[str, int | str]] = []
        if limits.cpus is not None:
            writes.append(("cpu.max", f"{cpu_quota_us(limits.cpus)} {CPU_PERIOD_US}"))
        if limits.cpu_shares is not None:
            writes.append(("cpu.weight", shares_to_weight(limits.cpu_shares)))
        if limits.cpuset_cpus is not None:
            writes.append(("cpuset.cpus", limits.cpuset_cpus))
        if limits.memory_bytes is not None:
            writes.append(("memory.max", limits.memory_bytes))
        if limits.memory_swap_bytes is not None:
            # v1's memsw counts memory + swap; v2's swap.max counts swap alone.
            swap, memory = limits.memory_swap_bytes, limits.memory_bytes
            writes.append(
                ("memory.swap.max", "max" if swap == -1 or memory is None else swap - memory)
            )
        if limits.memory_reservation_bytes is not None:
            writes.append(("memory.low", limits.memory_reservation_bytes))
        if limits.pids_limit is not None:
            writes.append(("pids.max", pids_max(limits.pids_limit)))
        if limits.blkio_weight is not None:
            # BFQ takes the blkio range as is; io.weight (iocost) needs converting.
            if self._has("io.bfq.weight"):
                writes.append(("io.bfq.weight", limits.blkio_weight))
            else:
                writes.append(("io.weight", blkio_to_io_weight(limits.blkio_weight)))
        # io.max: one write per device with all its keys ("8:0 rbps=N wbps=N"); the
        # kernel parses a single device per write and leaves unnamed keys as they are.
        keys: dict[str, list[str]] = {}
        for field, number, rate in throttle_rules(limits):
            keys.setdefault(number, []).append(f"{THROTTLES[field][1]}={rate}")
        for number, settings in keys.items():
            writes.append(("io.max", f"{number} {' '.join(settings)}"))
        return [(filename, str(value)) for filename, value in writes]

    def unsupported(self) -> dict[str, str]:
        found: dict[str, str] = {}
        enabled = set(self._read("cgroup.controllers", "probe").split())
        for field, files in V2_FILES.items():
            controller = files[0].split(".")[0]
            if controller not in enabled:
                found[field] = (
                    f"the {controller} controller is not enabled for {os.path.dirname(self._path)}"
                    "'s children (its parent does not offer it, or it holds processes)"
                )
            elif not any(self._has(name) for name in files):
                found[field] = missing_file_reason(field, files, os.path.dirname(self._path))
        if "cpuset_cpus" not in found and not self.usable_cpus():
            found["cpuset_cpus"] = (
                f"{self._path} has no effective CPUs, so no cpuset can be given to a container"
            )
        return found

    def usable_cpus(self) -> frozenset[int]:
        if not self._has("cpuset.cpus.effective"):
            return frozenset()
        return parse_cpu_list(self._read("cpuset.cpus.effective", "probe"))

    def _events(self) -> dict[str, int]:
        return flat_keyed(self._read("cgroup.events", "freeze"))

    def _set_frozen(self, frozen: bool, step: str) -> None:
        want = int(frozen)
        self._write("cgroup.freeze", want, step)
        for _ in attempts(self._timeout):
            if self._events().get("frozen") == want:
                return
        if frozen:
            self._write("cgroup.freeze", 0, step)
        raise CgroupError(
            f"cgroup {self._name} did not {step} within {self._timeout:.1f}s",
            step=step,
            path=self._file("cgroup.events"),
            hint="a process may be stuck in the kernel (D state); retry, or kill the container",
        )

    def freeze(self) -> None:
        """Write cgroup.freeze=1 and wait for cgroup.events to say ``frozen 1``."""
        self._set_frozen(True, "freeze")

    def thaw(self) -> None:
        self._set_frozen(False, "thaw")

    def is_frozen(self) -> bool:
        return self._has("cgroup.events") and self._events().get("frozen") == 1

    def pids(self) -> list[int]:
        return sorted(set(procs_recursive(self._fs, self._path)))

    def kill_all(self, sig: int = signal.SIGKILL) -> None:
        """SIGKILL: cgroup.kill (5.14+) kills the sub-tree atomically, forks included.

        Other signals, or older kernels: freeze, signal everyone, thaw.
        """
        if sig == signal.SIGKILL and self._has("cgroup.kill"):
            self._write("cgroup.kill", 1, "kill")
        else:
            frozen = False
            if self._has("cgroup.freeze"):
                with contextlib.suppress(CgroupError):  # stuck freezing: signal anyway
                    self.freeze()
                    frozen = True
            try:
                signal_pids(self.pids(), sig)
            finally:
                if frozen:
                    self.thaw()
        if sig == signal.SIGKILL:
            for _ in attempts(self._timeout):
                remaining = self.pids()
                if not remaining:
                    return
                signal_pids(remaining, sig)
            raise CgroupError(
                f"processes {self.pids()} survived SIGKILL in cgroup {self._name}",
                step="kill",
                path=self._path,
                hint="they may be stuck in the kernel (D state); retry later",
            )

    def oom_kill_count(self) -> int:
        if not self._has("memory.events"):
            return 0
        return flat_keyed(self._read("memory.events", "stats")).get("oom_kill", 0)

    def oom_killed(self) -> bool:
        return self.oom_kill_count() > 0

    def stats(self) -> CgroupStats:
        def number(filename: str) -> int | None:
            return int(self._read(filename, "stats")) if self._has(filename) else None

        def limit(filename: str) -> int | None:
            if not self._has(filename):
                return None
            text = self._read(filename, "stats")
            return None if text == "max" else int(text)

        cpu = flat_keyed(self._read("cpu.stat", "stats")) if self._has("cpu.stat") else {}
        read_bytes = write_bytes = 0
        if self._has("io.stat"):
            for line in self._read("io.stat", "stats").splitlines():
                fields = dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
                read_bytes += int(fields.get("rbytes", 0))
                write_bytes += int(fields.get("wbytes", 0))
        return CgroupStats(
            cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
            memory_usage_bytes=number("memory.current") or 0,
            memory_limit_bytes=limit("memory.max"),
            memory_peak_bytes=number("memory.peak"),
            memory_failcnt=None,
            pids_current=number("pids.current") or 0,
            pids_limit=limit("pids.max"),
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
                path=self._path,
                hint="stop the container first, or remove it with --force",
            )
        if remaining:
            self.kill_all(signal.SIGKILL)
        remove_tree(self._fs, self._path, self._timeout)


class V2Driver:
    """Creates container cgroups in the unified hierarchy beneath our own cgroup."""

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
        own_path = own_cgroups(proc_cgroup).get("")
        found: tuple[str, list[str]] | None = None
        if own_path is not None:
            for mount in cgroup_mounts(mountinfo):
                if mount.fstype == "cgroup2":
                    try:
                        found = parent_levels(mount, own_path, self._parent)
                    except CgroupError:
                        continue
                    break
        if found is None:
            raise CgroupError(
                "no cgroup2 hierarchy is mounted where this process can reach its cgroup",
                step="detect",
                path=mountinfo,
                hint="mount cgroup2 at /sys/fs/cgroup, or use the v1 driver",
            )
        self._start, self._levels = found
        self._base = os.path.join(self._start, *self._levels)

    @property
    def version(self) -> str:
        return "v2"

    @property
    def base_dir(self) -> str:
        """The parent directory of the container cgroups."""
        return self._base

    def controllers(self) -> frozenset[str]:
        text = self._fs.read(os.path.join(self._start, "cgroup.controllers"), "detect")
        return frozenset(text.split()) & frozenset(WANTED)

    def create(self, name: str) -> V2Cgroup:
        check_name(name)
        current = self._start
        self._delegate(current)
        for level in self._levels:
            current = os.path.join(current, level)
            self._created.extend(make_levels(self._fs, os.path.dirname(current), [level], None))
            self._delegate(current)
        path = os.path.join(self._base, name)
        self._fs.mkdir(path, "create")
        return V2Cgroup(name, path, self._fs, self._timeout)

    def _delegate(self, directory: str) -> None:
        """Enable the wanted controllers for *directory*'s children (see module doc)."""
        controllers = os.path.join(directory, "cgroup.controllers")
        available = set(self._fs.read(controllers, "create").split())
        control = os.path.join(directory, "cgroup.subtree_control")
        enabled = set(self._fs.read(control, "create").split())
        missing = [c for c in WANTED if c in available and c not in enabled]
        if not missing:
            return
        is_root = not self._fs.exists(os.path.join(directory, "cgroup.type"))
        procs = self._fs.read_pids(os.path.join(directory, "cgroup.procs"), "create")
        if procs and not is_root:
            raise CgroupError(
                f"cannot enable the {', '.join(missing)} controller(s) for the children of "
                f"{directory}: it holds {len(procs)} process(es), and cgroup v2 enables "
                "controllers for children only in a cgroup without processes of its own "
                "(we never move processes out of a cgroup we did not create)",
                step="create",
                path=control,
                errno=errno_module.EBUSY,
                hint="start the engine in a delegated cgroup (systemd-run --scope -p "
                "Delegate=yes ...), or name a cgroup sub-tree that holds no processes as "
                "the parent: codex32 --cgroup-parent /PATH (or CODEX32_CGROUP_PARENT=/PATH)",
            )
        for controller in missing:
            self._fs.write(control, f"+{controller}", "create")

    def open(self, name: str) -> V2Cgroup:
        check_name(name)
        path = os.path.join(self._base, name)
        if not self._fs.exists(path):
            raise CgroupError(
                f"no cgroup named {name!r} under {self._base}",
                step="open",
                path=path,
                hint="the container's cgroup was already removed",
            )
        return V2Cgroup(name, path, self._fs, self._timeout)

    def names(self) -> list[str]:
        return self._fs.subdirs(self._base)

    def prune(self) -> None:
        self._created = prune_dirs(self._fs, self._created)

"""File access and host discovery shared by the cgroup drivers.

Every cgroup file operation goes through :class:`CgroupFS` so that (1) every failure
becomes a :class:`~codex32.errors.CgroupError` naming the file, the errno and the step,
and (2) unit tests can swap in a subclass that behaves like the kernel on a tmp dir
(a new directory gets its control files, ``freezer.state`` turns ``FROZEN`` ...).

Host discovery reads ``/proc/self/mountinfo`` (where each hierarchy is mounted, and
which part of it: inside a container the mount root is not ``/``) and
``/proc/self/cgroup`` (where this process sits in each hierarchy). Both paths are
parameters so tests can describe any host layout.
"""

from __future__ import annotations

import errno as errno_module
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from codex32.errors import CgroupError

MOUNTINFO = "/proc/self/mountinfo"
PROC_CGROUP = "/proc/self/cgroup"

#: v1 controllers the kernel may mount; named hierarchies (``name=systemd``) are not.
V1_CONTROLLER_NAMES = frozenset(
    {
        "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory",
        "misc", "net_cls", "net_prio", "perf_event", "pids", "rdma",
    }
)  # fmt: skip


class CgroupFS:
    """Reads and writes cgroup files; every failure is a CgroupError with context."""

    def read(self, path: str, step: str) -> str:
        try:
            with open(path, encoding="ascii") as handle:
                return handle.read()
        except OSError as exc:
            raise _error(f"cannot read {path}", path, exc, step) from exc

    def write(self, path: str, value: str, step: str) -> None:
        """Write *value* in one write(2): the kernel parses each write on its own.

        No ``O_CREAT``: a control file that does not exist is a feature the kernel
        lacks, and that must surface as an error naming the file, not a new file.
        """
        try:
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            raise CgroupError(
                f"{os.path.basename(path)} does not exist in {os.path.dirname(path)}: "
                "the kernel does not offer this control",
                step=step,
                path=path,
                errno=exc.errno,
                hint="drop this limit, or use a kernel/controller that supports it",
            ) from exc
        except OSError as exc:
            raise _error(f"cannot open {path}", path, exc, step) from exc
        try:
            os.write(fd, value.encode("ascii"))
        except OSError as exc:
            raise _error(f"cannot write {value!r} to {path}", path, exc, step) from exc
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mkdir(self, path: str, step: str) -> None:
        """Create one cgroup directory; EEXIST is an error (never adopt a foreign cgroup)."""
        try:
            os.mkdir(path, 0o755)
        except FileExistsError as exc:
            raise CgroupError(
                f"cgroup {path} already exists",
                step=step,
                path=path,
                errno=exc.errno,
                hint="pick another container name, or remove the stale container first",
            ) from exc
        except OSError as exc:
            raise _error(f"cannot create cgroup {path}", path, exc, step) from exc

    def rename(self, path: str, target: str, step: str) -> None:
        """Rename a cgroup directory beside itself (v1); the target must not exist."""
        if os.path.lexists(target):
            raise CgroupError(f"cgroup {target} already exists", step=step, path=target)
        try:
            os.rename(path, target)
        except OSError as exc:
            raise CgroupError(
                f"cannot rename {path} to {os.path.basename(target)}: {exc.strerror}",
                step=step,
                path=path,
                errno=exc.errno,
            ) from exc

    def rmdir(self, path: str) -> None:
        """Remove an (empty) cgroup directory; raises OSError so callers can retry EBUSY."""
        os.rmdir(path)

    def subdirs(self, path: str) -> list[str]:
        try:
            with os.scandir(path) as entries:
                return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []

    def read_pids(self, path: str, step: str) -> list[int]:
        return [int(line) for line in self.read(path, step).split()]


def _error(message: str, path: str, exc: OSError, step: str) -> CgroupError:
    hint = None
    if exc.errno in (errno_module.EACCES, errno_module.EPERM, errno_module.EROFS):
        hint = "cgroups need root (or a delegated, writable cgroup)"
    return CgroupError(message, step=step, path=path, errno=exc.errno, hint=hint)


@dataclass(frozen=True)
class Mount:
    """One cgroup mount: where it is, which part of the hierarchy it shows, what it has."""

    fstype: str  # "cgroup" (v1) or "cgroup2"
    mountpoint: str
    root: str  # the hierarchy path shown at mountpoint ("/" unless inside a container)
    controllers: frozenset[str]  # v1: from the super options; v2: empty (see cgroup.controllers)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def cgroup_mounts(mountinfo: str = MOUNTINFO) -> list[Mount]:
    """Every cgroup and cgroup2 mount, in mount order (see proc(5), /proc/pid/mountinfo)."""
    try:
        with open(mountinfo, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise _error("cannot read the mount table", mountinfo, exc, "detect") from exc
    mounts: list[Mount] = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        options = set(tail[2].split(","))
        controllers = (
            frozenset(options & V1_CONTROLLER_NAMES) if tail[0] == "cgroup" else frozenset()
        )
        mounts.append(Mount(tail[0], _unescape(fields[4]), _unescape(fields[3]), controllers))
    return mounts


def own_cgroups(proc_cgroup: str = PROC_CGROUP) -> dict[str, str]:
    """Map each hierarchy of this process to its cgroup path.

    Keys are the controller list of a v1 hierarchy as the kernel prints it
    (``"cpu,cpuacct"``, ``"name=systemd"``) and ``""`` for the v2 hierarchy.
    """
    try:
        with open(proc_cgroup, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise _error("cannot read this process's cgroups", proc_cgroup, exc, "detect") from exc
    result: dict[str, str] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            result[parts[1]] = parts[2]
    return result


def host_path(mount: Mount, cgroup_path: str) -> str:
    """Where the hierarchy path *cgroup_path* is on disk under *mount*.

    Inside a container the mount shows only a sub-tree (mount root != "/"): a path
    outside it cannot be reached and is an error.
    """
    root = PurePosixPath(mount.root)
    path = PurePosixPath(cgroup_path)
    if path != root and root not in path.parents:
        raise CgroupError(
            f"this process's cgroup {cgroup_path} is outside the part of the hierarchy "
            f"mounted at {mount.mountpoint} ({mount.root})",
            step="detect",
            path=mount.mountpoint,
            hint="mount the cgroup hierarchy so that it shows the engine's own cgroup",
        )
    relative = str(path.relative_to(root))
    return mount.mountpoint if relative == "." else os.path.join(mount.mountpoint, relative)


def check_parent(parent: str) -> PurePosixPath:
    """Validate a cgroup parent: relative (beneath our cgroup) or absolute (Docker's).

    A relative parent is the default and the safe choice. An absolute one names a
    path from the hierarchy's root, for operators who give the engine a delegated
    sub-tree elsewhere (``--cgroup-parent /codex32.slice``). ``..`` never passes.
    """
    path = PurePosixPath(parent)
    parts = [part for part in parent.split("/") if part]
    if not parts or any(part in (".", "..") for part in parts):
        raise CgroupError(
            f"cgroup parent {parent!r} must name a path without '.' or '..' components",
            step="create",
        )
    if any(part.startswith("cgroup.") or "\n" in part for part in parts):
        raise CgroupError(f"cgroup parent {parent!r} is not a valid cgroup path", step="create")
    return path


def check_name(name: str) -> None:
    """A container cgroup name is one plain path component."""
    if (
        not name
        or "/" in name
        or name in (".", "..")
        or name.startswith("cgroup.")
        or "\n" in name
        or "\x00" in name
    ):
        raise CgroupError(
            f"cgroup name {name!r} must be one path component, not '.', '..' or 'cgroup.*'",
            step="create",
        )


def parent_levels(mount: Mount, own_path: str, parent: PurePosixPath) -> tuple[str, list[str]]:
    """The directory to start from and the levels to walk down to reach *parent*.

    Relative parent: start at our own cgroup. Absolute: at the hierarchy path of the
    parent's first level that the mount shows (the mount root, normally ``/``).
    """
    if not parent.is_absolute():
        return host_path(mount, own_path), list(parent.parts)
    root = PurePosixPath(mount.root)
    if parent != root and root not in parent.parents:
        raise CgroupError(
            f"cgroup parent {parent} is outside the part of the hierarchy mounted at "
            f"{mount.mountpoint} ({mount.root})",
            step="create",
            path=mount.mountpoint,
        )
    return mount.mountpoint, list(parent.relative_to(root).parts)


def attempts(timeout: float) -> Iterator[int]:
    """Yield attempt numbers (at least one) with growing sleeps until *timeout* passes."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        if time.monotonic() >= deadline:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def remove_tree(fs: CgroupFS, path: str, timeout: float) -> None:
    """rmdir *path* and its sub-cgroups, deepest first, retrying EBUSY until *timeout*.

    The kernel keeps a cgroup busy for a moment after its last task exited (the
    task is unlinked when it is reaped, and css offlining is asynchronous).
    """
    for child in fs.subdirs(path):
        remove_tree(fs, os.path.join(path, child), timeout)
    last: OSError | None = None
    for _ in attempts(timeout):
        try:
            fs.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno not in (errno_module.EBUSY, errno_module.ENOTEMPTY):
                raise _error(f"cannot remove cgroup {path}", path, exc, "destroy") from exc
            last = exc
    raise CgroupError(
        f"cgroup {path} is still busy after {timeout:.1f}s",
        step="destroy",
        path=path,
        errno=last.errno if last else errno_module.EBUSY,
        hint="a process may still be in it: kill it first (kill_all), then retry",
    )


def make_levels(
    fs: CgroupFS, start: str, levels: list[str], prepare: Callable[[CgroupFS, str], None] | None
) -> list[str]:
    """Create the missing directories from *start* down *levels*; return those we made.

    *prepare* runs on each new directory (v1 cpuset copies cpus/mems). A level that
    a concurrent engine created between our check and our mkdir is not ours, but
    *prepare* (idempotent) runs on it too: its creator may not have prepared it yet,
    and a child of an unprepared cpuset copies its empty cpus (then ENOSPC on join).
    """
    made: list[str] = []
    current = start
    for level in levels:
        current = os.path.join(current, level)
        if fs.exists(current):
            if prepare is not None:
                prepare(fs, current)
            continue
        try:
            fs.mkdir(current, "create")
        except CgroupError as exc:
            if exc.errno != errno_module.EEXIST:
                raise
            if prepare is not None:
                prepare(fs, current)
            continue
        made.append(current)
        if prepare is not None:
            prepare(fs, current)
    return made


def prune_dirs(fs: CgroupFS, created: list[str]) -> list[str]:
    """rmdir the parent levels we created, deepest first, if empty; return what remains."""
    for path in reversed(created):
        try:
            fs.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno not in (errno_module.EBUSY, errno_module.ENOTEMPTY):
                raise _error(f"cannot remove cgroup {path}", path, exc, "prune") from exc
    return [path for path in created if fs.exists(path)]


def procs_recursive(fs: CgroupFS, directory: str) -> list[int]:
    """Pids in *directory*'s cgroup.procs and in every sub-cgroup's."""
    procs = os.path.join(directory, "cgroup.procs")
    if not fs.exists(procs):
        return []
    try:
        found = fs.read_pids(procs, "pids")
    except CgroupError as exc:  # removed meanwhile (the monitor gives it back at exit)
        if exc.errno in (errno_module.ENOENT, errno_module.ENODEV):
            return []
        raise
    for child in fs.subdirs(directory):
        found.extend(procs_recursive(fs, os.path.join(directory, child)))
    return found


def flat_keyed(text: str) -> dict[str, int]:
    """Parse "key value" lines (memory.oom_control, memory.events, cpu.stat, cgroup.events)."""
    result: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result

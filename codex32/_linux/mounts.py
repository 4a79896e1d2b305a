"""The mount steps of a container's set-up, run in its own mount namespace.

Nothing here is visible on the host: the set-up process unshares its mount
namespace first and makes every mount private, so all of it vanishes with the
container's last process, and a crash mid-set-up leaves no mount behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from codex32._linux.mountattr import MOUNT_ATTR_RDONLY, mount_setattr
from codex32._linux.paths import fd_path, open_beneath, open_host_source
from codex32._linux.syscalls import (
    MNT_DETACH,
    MS_BIND,
    MS_NOATIME,
    MS_NODEV,
    MS_NODIRATIME,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_RELATIME,
    MS_REMOUNT,
    MS_STRICTATIME,
    mount,
    pivot_root,
    umount2,
)

# statvfs f_flag bits -> the mount flags a remount must repeat (a user namespace
# refuses a remount that would clear a flag the parent namespace locked).
_ST_TO_MS = (
    (os.ST_RDONLY, MS_RDONLY),
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (os.ST_NOATIME, MS_NOATIME),
    (os.ST_NODIRATIME, MS_NODIRATIME),
    (os.ST_RELATIME, MS_RELATIME),
)
_FLAG_NAMES = {
    "ro": MS_RDONLY,
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
}
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


@contextmanager
def _opened(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _locked_flags(fd: int) -> int:
    flags = os.fstatvfs(fd).f_flag
    return sum(ms for st, ms in _ST_TO_MS if flags & st)


def make_private() -> None:
    """Stop mount events from propagating to or from the host."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)


def overlay(
    lower: list[str], upper: str, work: str, target: str, userxattr: bool, base: str | None = None
) -> None:
    """The container's root: the template (or the image's layers) read-only below, its
    own upper layer on top. With ``base``, ``lower`` is relative to it (mounted from
    there, as Docker's short ``l/`` names: the options must fit in one page)."""
    if base is not None:
        os.chdir(base)
    options = f"lowerdir={':'.join(lower)},upperdir={upper},workdir={work}"
    if userxattr:
        options += ",userxattr"
    mount("overlay", target, "overlay", 0, options)


def _remount_read_only(fd: int) -> None:
    """Make the one mount ``fd`` is the root of read-only, repeating its locked flags."""
    flags = _locked_flags(fd) | MS_RDONLY
    mount(None, fd_path(fd), None, MS_REMOUNT | MS_BIND | flags)


def _unescape(field: str) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as \\ooo."""
    head, *escaped = field.split("\\")
    return head + "".join(chr(int(part[:3], 8)) + part[3:] for part in escaped)


def _mount_id(fd: int) -> int:
    """The id of the mount an open descriptor is on (as mountinfo's first field)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    raise OSError(errno.EINVAL, f"no mnt_id in /proc/self/fdinfo/{fd}")


def _mounts_below(top: int) -> list[tuple[int, str]]:
    """(id, mount point) of every mount in the tree below mount ``top``, from mountinfo."""
    children: dict[int, list[tuple[int, str]]] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            children.setdefault(int(fields[1]), []).append((int(fields[0]), _unescape(fields[4])))
    found: list[tuple[int, str]] = []
    frontier = [top]
    while frontier:
        below = [m for m in children.get(frontier.pop(), []) if m[0] != top and m not in found]
        found += below
        frontier += [mount_id for mount_id, _point in below]
    return found


def make_read_only(root_fd: int, target: str) -> None:
    """Make the mount at ``target`` (below the root) and every mount below it read-only.

    A recursive bind brings along whatever is mounted below its source; remounting
    only the top one would leave those writable (runc's ``ro`` versus ``rro``).
    mount_setattr(AT_RECURSIVE) does the whole tree at once. Where the kernel lacks
    it (ENOSYS), each mount of the tree is remounted: found in mountinfo, opened
    below the root again (never a path outside it), and remounted only if that path
    still leads to that very mount (one hidden by a later mount is out of reach).
    """
    with _opened(open_beneath(root_fd, target)) as fd:
        try:
            mount_setattr(fd, MOUNT_ATTR_RDONLY, recursive=True, what=f"read-only {target}")
            return
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise
        _remount_read_only(fd)
        top = _mount_id(fd)
    root = os.readlink(fd_path(root_fd)).rstrip("/")
    for mount_id, point in _mounts_below(top):
        if not point.startswith(root + "/"):
            continue
        try:
            nested = open_beneath(root_fd, point[len(root) :])
        except FileNotFoundError:
            continue  # unmounted since
        with _opened(nested):
            if _mount_id(nested) == mount_id:
                _remount_read_only(nested)


def bind(root_fd: int, source: str, target: str, read_only: bool) -> None:
    """Bind a host path below the root; the target's resolution may not leave it."""
    try:
        src_fd = open_host_source(source)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        # The engine resolved the path when the container was made: a symlink now
        # means it was swapped since, and following it could bind anything.
        raise OSError(
            errno.ELOOP,
            f"{source} is now a symlink, or has one in its path (replaced since the "
            "container was created?); refusing to follow it",
            source,
        ) from None
    with _opened(src_fd) as src:
        kind = "dir" if os.path.isdir(fd_path(src)) else "file"
        with _opened(open_beneath(root_fd, target, create=kind)) as dst:
            mount(fd_path(src), fd_path(dst), None, MS_BIND | MS_REC)
    if read_only:
        make_read_only(root_fd, target)


def proc(root_fd: int, target: str) -> None:
    """A procfs of the container's own pid namespace."""
    with _opened(open_beneath(root_fd, target, create="dir")) as fd:
        mount("proc", fd_path(fd), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def sysfs(root_fd: int, target: str, read_only: bool) -> None:
    """sysfs, read-only; a recursive bind of the host's when a new one is refused."""
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | (MS_RDONLY if read_only else 0)
    with _opened(open_beneath(root_fd, target, create="dir")) as fd:
        try:
            mount("sysfs", fd_path(fd), "sysfs", flags)
            return
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise
        mount("/sys", fd_path(fd), None, MS_BIND | MS_REC)
    if read_only:
        make_read_only(root_fd, target)


def tmpfs(root_fd: int, target: str, size: int | None, mode: int, flags: list[str]) -> None:
    """A private tmpfs."""
    mount_flags = sum(_FLAG_NAMES.get(f, 0) for f in set(flags))
    data = f"mode={mode:o}" + (f",size={size}" if size else "")
    with _opened(open_beneath(root_fd, target, create="dir")) as fd:
        mount("tmpfs", fd_path(fd), "tmpfs", mount_flags, data)


def dev(root_fd: int, target: str, mqueue: bool) -> None:
    """A minimal /dev: a few host nodes bound in, a private devpts, shm, symlinks.

    Nodes are bound rather than created with mknod so that the same code works in a
    user namespace, where mknod is refused. Each bound node is a mount of its own
    (with the host devtmpfs's flags), so the tmpfs under them is nodev, nosuid and
    noexec: a node made there with mknod cannot be opened, whatever the device
    cgroup says, and nothing there runs.
    """
    with _opened(open_beneath(root_fd, target, create="dir")) as fd:
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_STRICTATIME
        mount("tmpfs", fd_path(fd), "tmpfs", flags, "mode=755,size=65536k")
    for node in DEV_NODES:
        bind(root_fd, f"/dev/{node}", f"{target}/{node}", read_only=False)
    with _opened(open_beneath(root_fd, f"{target}/pts", create="dir")) as fd:
        mount(
            "devpts", fd_path(fd), "devpts", MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        )  # fmt: skip
    with _opened(open_beneath(root_fd, f"{target}/shm", create="dir")) as fd:
        mount(
            "shm", fd_path(fd), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
            "mode=1777,size=65536k",
        )  # fmt: skip
    if mqueue:
        with _opened(open_beneath(root_fd, f"{target}/mqueue", create="dir")) as fd:
            mount("mqueue", fd_path(fd), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    with _opened(open_beneath(root_fd, target)) as devfd:
        links = {
            "ptmx": "pts/ptmx",
            "fd": "/proc/self/fd",
            "stdin": "/proc/self/fd/0",
            "stdout": "/proc/self/fd/1",
            "stderr": "/proc/self/fd/2",
        }
        for name, link_target in links.items():
            os.symlink(link_target, name, dir_fd=devfd)


def mask(root_fd: int, paths: list[str]) -> None:
    """Hide paths: /dev/null over files, an empty read-only tmpfs over directories."""
    for path in paths:
        try:
            fd = open_beneath(root_fd, path)
        except FileNotFoundError:
            continue
        with _opened(fd):
            if os.path.isdir(fd_path(fd)):
                mount("tmpfs", fd_path(fd), "tmpfs", MS_RDONLY, "size=0")
            else:
                with _opened(open_host_source("/dev/null")) as null:
                    mount(fd_path(null), fd_path(fd), None, MS_BIND)


def readonly_paths(root_fd: int, paths: list[str]) -> None:
    """Bind each path onto itself, then make it (and what is below it) read-only."""
    for path in paths:
        try:
            fd = open_beneath(root_fd, path)
        except FileNotFoundError:
            continue
        with _opened(fd):
            mount(fd_path(fd), fd_path(fd), None, MS_BIND | MS_REC)
        make_read_only(root_fd, path)


def enter_root(rootfs: str) -> None:
    """pivot_root into the new root and detach the old one (runc's '.' '.' trick)."""
    os.chdir(rootfs)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/")


def remount_root_read_only() -> None:
    """Make the container's root read-only (writes fail with EROFS)."""
    fd = os.open("/", os.O_PATH | os.O_CLOEXEC)
    with _opened(fd):
        flags = _locked_flags(fd)
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)

"""Thin ctypes wrappers over the syscalls Python 3.11's ``os`` lacks.

Every wrapper raises ``OSError`` with the errno, so the caller can report the step
and the errno to the engine. Only the stdlib is imported: this module runs in the
container's set-up process, whose import time is the container's start latency.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

# sched.h
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

NAMESPACE_FLAGS: dict[str, int] = {
    "user": CLONE_NEWUSER,
    "pid": CLONE_NEWPID,
    "mount": CLONE_NEWNS,
    "uts": CLONE_NEWUTS,
    "ipc": CLONE_NEWIPC,
    "net": CLONE_NEWNET,
    "cgroup": CLONE_NEWCGROUP,
    "time": CLONE_NEWTIME,
}

# sys/mount.h
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# openat2(2)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# x86_64 and aarch64 share these numbers (both use the generic table for them).
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134}
_SYS_OPENAT2 = 437
_SYS_CLONE3 = 435  # the same number on every architecture (asm-generic)
CLONE_INTO_CGROUP = 0x200000000
_MACHINE = os.uname().machine


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def unshare(flags: int) -> None:
    """unshare(2): move the caller into new namespaces."""
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace ``fd`` refers to."""
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2)."""
    result = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        data.encode() if data is not None else None,
    )
    _check(result, f"mount {fstype or 'bind'} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2), by syscall number: glibc has no wrapper."""
    number = _SYS_PIVOT_ROOT[_MACHINE]
    result = _libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode())
    _check(result, "pivot_root", new_root)


def default_signal_action(number: int) -> None:
    """rt_sigaction(2) to SIG_DFL by syscall number, for every signal, 32 and 33 too.

    glibc's sigaction (so Python's signal.signal) refuses the two real-time signals it
    keeps for itself; an ignored one would still pass through execve, so the kernel is
    asked directly (handler, flags, restorer, mask: all zero; an 8-byte mask).
    """
    action = (ctypes.c_ulong * 4)()
    result = _libc.syscall(
        ctypes.c_long(_SYS_RT_SIGACTION[_MACHINE]),
        ctypes.c_int(number),
        ctypes.byref(action),
        None,
        ctypes.c_size_t(8),
    )
    _check(result, f"rt_sigaction({number})")


def sethostname(name: str) -> None:
    """sethostname(2) in the caller's UTS namespace."""
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open ``path`` below ``dirfd`` under the ``resolve`` restrictions."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    result = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        path.encode(),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    return _check(result, f"openat2 {path}", path)


class _CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                     "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")
    ]  # fmt: skip


#: clone3 through a PyDLL: the GIL stays held across it, as ``os.fork`` holds it.
_libc_gil = ctypes.PyDLL(None, use_errno=True)
_libc_gil.syscall.restype = ctypes.c_long


def fork_into_cgroup(cgroup_fd: int) -> int:
    """``os.fork`` whose child starts in the cgroup (v2) ``cgroup_fd`` names:
    clone3(CLONE_INTO_CGROUP), so that no ``cgroup.procs`` write, and none of the RCU
    grace period it waits out, is needed. 0 in the child, its pid in the parent.

    Python's fork bookkeeping runs around it as ``os.fork`` runs it (before-fork,
    after-fork in each process); only for single-threaded callers (the set-up process).
    """
    import signal

    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = _libc_gil.syscall(
        ctypes.c_long(_SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args))
    )
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3 into a cgroup: {os.strerror(err)}")
    return int(pid)

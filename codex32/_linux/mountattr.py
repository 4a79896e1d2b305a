"""mount_setattr(2): change a whole mount tree's flags in one call (Linux 5.12+).

A bind is recursive (MS_REC), but ``mount(MS_REMOUNT | MS_BIND | MS_RDONLY)`` only
changes the top mount: everything mounted below the source stays writable in the
container. mount_setattr with AT_RECURSIVE changes them all, atomically, which is
what runc's ``rro`` option and Docker 25+ do for read-only binds. Kept apart from
``syscalls`` so the set-up path imports nothing it does not use.
"""

from __future__ import annotations

import ctypes

from codex32._linux.syscalls import _check, _libc

# linux/mount.h, linux/fcntl.h
MOUNT_ATTR_RDONLY = 0x00000001
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# x86_64 and aarch64 share the number (the generic table, as openat2's).
_SYS_MOUNT_SETATTR = 442


class _MountAttr(ctypes.Structure):
    """struct mount_attr, MOUNT_ATTR_SIZE_VER0 (32 bytes)."""

    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def mount_setattr(fd: int, attr_set: int, *, recursive: bool, what: str) -> None:
    """Set ``attr_set`` on the mount ``fd`` is the root of (and every mount below it).

    Raises ``OSError`` with the errno: ENOSYS on a kernel without the syscall (or
    where seccomp hides it), so the caller can fall back to remounting one by one.
    """
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    result = _libc.syscall(
        ctypes.c_long(_SYS_MOUNT_SETATTR),
        ctypes.c_int(fd),
        b"",
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, f"mount_setattr {what}", what)

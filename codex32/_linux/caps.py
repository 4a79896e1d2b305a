"""Capability sets through capset(2)/prctl(2) by number.

Why not python-prctl here: its capability tables (1.8.1) stop at CAP_BPF (39), so
``capbset.limit()`` would leave CAP_CHECKPOINT_RESTORE (40) and anything newer in
the bounding set. Dropping by number up to /proc/sys/kernel/cap_last_cap cannot
miss one. no_new_privs and the subreaper flag go through the same ctypes prctl:
the monitor runs without site-packages (``python -S``, for start-up time), and
nothing can be imported after pivot_root.
"""

from __future__ import annotations

import ctypes
import os

from codex32.config.capabilities import CAPABILITY_NUMBERS

_libc = ctypes.CDLL(None, use_errno=True)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


class _Header(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _Data(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def _mask(names: list[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def _prctl(option: int, arg2: int, arg3: int = 0) -> None:
    if _libc.prctl(option, ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg2}): {os.strerror(err)}")


def drop_bounding_set(keep: list[str]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP)."""
    kept = _mask(keep)
    for number in range(last_cap() + 1):
        if not kept & (1 << number):
            _prctl(PR_CAPBSET_DROP, number)


def set_capabilities(keep: list[str]) -> None:
    """Effective = permitted = what we hold of ``keep``; inheritable and ambient empty.

    An empty inheritable set is what Docker does since CVE-2022-24769.
    """
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capget: {os.strerror(err)}")
    wanted = _mask(keep)
    held = data[0].permitted | (data[1].permitted << 32)
    sets = wanted & held
    for i in (0, 1):
        part = (sets >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = part
        data[i].permitted = part
        data[i].inheritable = 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


PR_SET_NO_NEW_PRIVS = 38
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


def set_child_subreaper() -> None:
    """Orphans below us are re-parented to us, not to init (the monitor reaps them)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_no_new_privs() -> None:
    """execve can no longer grant privileges (setuid bits, file capabilities)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_undumpable() -> None:
    """No ptrace, no /proc/PID/mem, fd or environ access by anyone without
    CAP_SYS_PTRACE (CVE-2016-9962: a container process attaching to the host's
    set-up process while it joins). execve makes an ordinary program dumpable again."""
    _prctl(PR_SET_DUMPABLE, 0)


def is_dumpable() -> bool:
    """Whether the process is dumpable (ptrace-able by its own uid)."""
    return bool(_libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def set_process_name(name: str) -> None:
    """The name ps and top show (15 bytes), so a monitor is recognisable."""
    raw = ctypes.create_string_buffer(name.encode()[:15])
    _libc.prctl(PR_SET_NAME, raw, 0, 0, 0)

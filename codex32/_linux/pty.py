"""Pseudo-terminals from a given devpts instance (a container's own).

A terminal opened from the host's ``/dev/ptmx`` has no name inside a container,
whose ``/dev/pts`` is a devpts of its own: ``tty`` says "not a tty" and programs
that look their terminal up by name fail. Opening the container's ``ptmx`` and the
slave through ``TIOCGPTPEER`` (no path lookup) gives a terminal that is
``/dev/pts/N`` inside, as runc's console and Docker's ``-t`` give.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import termios

#: <asm-generic/ioctls.h>: unlock a new pty; open its peer (Linux >= 4.13).
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441


def open_pty(ptmx: str) -> tuple[int, int]:
    """(master, slave) of a new pty of the devpts whose ``ptmx`` this is; close-on-exec."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = int(fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC))
    except BaseException:
        os.close(master)
        raise
    return master, slave


def copy_window_size(source_fd: int, target_fd: int) -> None:
    """Give the terminal ``target_fd`` the window size of ``source_fd`` (if both are)."""
    with contextlib.suppress(OSError):  # not a terminal: nothing to copy
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
        fcntl.ioctl(target_fd, termios.TIOCSWINSZ, size)


def write_all(fd: int, data: bytes) -> None:
    """``write`` until all of ``data`` is written (a terminal or pipe takes it in parts)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

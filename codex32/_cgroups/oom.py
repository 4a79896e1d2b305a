"""A cgroup's OOM kills, read and watched from its directory (standard library only).

The monitor, which must stay small and never imports the drivers, uses this to tell
whether the kernel's OOM killer struck while the container ran, and (``OomWatch``)
to report each kill when it happens, as Docker's ``oom`` event, not only at exit.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterator

#: v1 signals the eventfd *before* its OOM killer picks and kills a victim, so the
#: counter may not have risen yet when we wake (seen on 6.x): re-read it this long
#: after each notification (s).
_V1_RECHECKS = tuple(0.005 * 2**i for i in range(9))  # 5 ms, 10 ms, ... 1.28 s


def _read_oom_kill(fd: int) -> int | None:
    """``oom_kill`` from an open memory.events / memory.oom_control (None if unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode()
    except OSError:  # ENODEV: the cgroup was removed
        return None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _opened(paths: dict[str, str]) -> Iterator[tuple[str, str, int]]:
    """(version, path, open fd) of each file that counts the cgroup's OOM kills, v2
    first; the caller closes each fd it is given."""
    candidates = []
    if "unified" in paths:
        candidates.append(("v2", os.path.join(paths["unified"], "memory.events")))
    if "memory" in paths:
        candidates.append(("v1", os.path.join(paths["memory"], "memory.oom_control")))
    for version, path in candidates:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        yield version, path, fd


def oom_kill_count(paths: dict[str, str]) -> int:
    """``oom_kill`` from v2 ``memory.events`` or v1 ``memory.oom_control`` (0 if absent)."""
    for _version, _path, fd in _opened(paths):
        try:
            count = _read_oom_kill(fd)
        finally:
            os.close(fd)
        if count is not None:
            return count
    return 0


class OomWatch:
    """Wakes a selector when the cgroup's OOM-kill counter may have risen.

    ``fileno()`` turns readable on the kernel's notification, no timer polls:
    v2: ``memory.events`` signals a change with POLLPRI only (it always polls
    readable), so it sits in an epoll of its own asking for EPOLLPRI, and that
    epoll's fd is what the caller's selector watches; re-reading the file through
    the same fd clears the signal. v1: an eventfd registered through
    ``cgroup.event_control`` on ``memory.oom_control``.
    """

    def __init__(self, fd: int, notify_fd: int, poller: select.epoll | None):
        self._fd = fd  # memory.events / memory.oom_control, re-read on every wake-up
        self._notify_fd = notify_fd
        self._poller = poller
        self._rechecks: list[float] = []  # v1: monotonic times to re-read the counter

    @classmethod
    def open(cls, paths: dict[str, str]) -> OomWatch | None:
        """Watch the cgroup of ``paths``; None where the kernel cannot tell us (no
        memory controller, no right to register, a fake driver's paths)."""
        for version, path, fd in _opened(paths):
            try:
                return cls._register(version, path, fd)
            except OSError:
                os.close(fd)
        return None

    @classmethod
    def _register(cls, version: str, path: str, fd: int) -> OomWatch:
        if version == "v2":
            poller = select.epoll()
            try:
                poller.register(fd, select.EPOLLPRI)
            except OSError:
                poller.close()
                raise
            _read_oom_kill(fd)  # a kernfs fd polls POLLPRI until its first read
            return cls(fd, poller.fileno(), poller)
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            control = os.path.join(os.path.dirname(path), "cgroup.event_control")
            with open(control, "w") as f:
                f.write(f"{event} {fd}")
        except OSError:
            os.close(event)
            raise
        return cls(fd, event, None)

    def fileno(self) -> int:
        return self._notify_fd

    def timeout(self) -> float | None:
        """Seconds until a v1 re-read is due (0: now), None if none is pending."""
        if not self._rechecks:
            return None
        return max(0.0, self._rechecks[0] - time.monotonic())

    def count(self, notified: bool) -> int | None:
        """The counter now (None if unreadable), after a notification or a due re-read.

        Call it after every select, ``notified`` saying whether ``fileno()`` was ready;
        with neither a notification nor a due re-read it returns None without reading.
        """
        now = time.monotonic()
        if notified:
            if self._poller is None:
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._notify_fd)
                self._rechecks = [now + delay for delay in _V1_RECHECKS]
        elif self._rechecks and self._rechecks[0] <= now:
            self._rechecks = [t for t in self._rechecks if t > now]
        else:
            return None
        count = _read_oom_kill(self._fd)
        if count is None:
            self._rechecks = []  # the cgroup is gone: nothing more will come
        return count

    def close(self) -> None:
        """Close the fds; closing the eventfd also drops its v1 registration."""
        if self._poller is not None:
            self._poller.close()
        else:
            os.close(self._notify_fd)
        os.close(self._fd)

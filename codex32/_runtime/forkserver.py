"""A warm, single-threaded launcher: forks one monitor per container (a zygote).

A fresh interpreter per container costs tens of milliseconds of start-up and
imports on these machines; forking a process that has already imported the
monitor costs about one. The engine may be threaded (the host service), so it
never forks itself: it starts this server once with ``subprocess`` and sends it,
per container, the container's sync socket and stdio over a control socket
(SCM_RIGHTS). Monitors forked from here also share its pages, which keeps their
unique memory small. The server exits when the engine hangs up.

With ``--once`` (the CLI's, started before its own imports) the server becomes the
first monitor it is asked for instead of forking it: a CLI exits at once, and a
monitor forked from a server that is gone keeps all of the server's pages to itself.

Control message (one datagram): ``b"spawn"`` with four descriptors attached:
the sync socket, stdin, stdout, stderr.
"""

from __future__ import annotations

import array
import gc
import os
import signal
import socket
import sys

from codex32._linux.caps import set_process_name
from codex32._runtime import monitor as _monitor

_FDS = 4


def _receive(control: socket.socket) -> list[int] | None:
    fds = array.array("i")
    message, ancillary, _flags, _addr = control.recvmsg(64, socket.CMSG_SPACE(_FDS * fds.itemsize))
    if not message:
        return None
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return list(fds)


def _child(control: socket.socket, fds: list[int], *, forked: bool) -> None:
    """Become the monitor (``forked``: as this server's child, which it reaps)."""
    sync_fd, stdin, stdout, stderr = fds
    control.close()
    for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
        os.dup2(fd, target)
    for fd in (stdin, stdout, stderr):
        if fd > 2:
            os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = _monitor.serve(socket.socket(fileno=sync_fd), daemonize=not forked)
    os._exit(code)


def main() -> int:
    """``python -S -m codex32._runtime.forkserver FD``: serve spawn requests until EOF."""
    control = socket.socket(fileno=int(sys.argv[1]))
    once = sys.argv[2:] == ["--once"]
    set_process_name("codex32-forksrv")
    if not once:
        # Shared with every --rm monitor forked from here (they release the network).
        from codex32._network import endpoint  # noqa: F401

    # Everything imported so far is shared with the monitors forked from here; frozen,
    # the collector never walks (so never writes, so never copies) those pages in them.
    gc.freeze()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The monitors forked from here are its children: reap them as they exit.
    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    while True:
        try:
            fds = _receive(control)
        except InterruptedError:
            continue
        if fds is None:
            return 0
        if len(fds) != _FDS:
            for fd in fds:
                os.close(fd)
            continue
        if once:
            _child(control, fds, forked=False)  # never returns
        if os.fork() == 0:
            _child(control, fds, forked=True)  # never returns
        for fd in fds:
            os.close(fd)


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    sys.exit(main())

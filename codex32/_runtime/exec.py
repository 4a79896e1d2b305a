"""``python -S -m codex32._runtime.exec FD``: run one more process in a running container.

Joins PID 1's namespaces (the user namespace first, so that it owns the rest),
forks into its pid namespace, then applies the container's own privilege steps
(bounding set, user, capabilities, no_new_privs, seccomp) before exec: the new
process is confined exactly like the container's command. Its exit code becomes
this process's exit code; a failure before exec is reported on FD as the launch
protocol's ``error`` message (see ``_sync``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import termios
from typing import NoReturn

from codex32._linux import syscalls
from codex32._runtime import faults as _faults
from codex32._runtime import protocol as _sync
from codex32._runtime.init import Setup, StepError

# setns order: user first (it owns the others), pid last (it applies to children).
_JOIN_ORDER = ("user", "mnt", "uts", "ipc", "net", "cgroup", "time", "pid")
_NSTYPE = {
    "user": syscalls.CLONE_NEWUSER,
    "mnt": syscalls.CLONE_NEWNS,
    "uts": syscalls.CLONE_NEWUTS,
    "ipc": syscalls.CLONE_NEWIPC,
    "net": syscalls.CLONE_NEWNET,
    "cgroup": syscalls.CLONE_NEWCGROUP,
    "time": syscalls.CLONE_NEWTIME,
    "pid": syscalls.CLONE_NEWPID,
}


def _join(pid: int) -> None:
    """Enter every namespace of ``pid`` that differs from ours."""
    fds = {}
    for name in _JOIN_ORDER:
        theirs, ours = f"/proc/{pid}/ns/{name}", f"/proc/self/ns/{name}"
        if os.path.exists(theirs) and os.stat(theirs).st_ino != os.stat(ours).st_ino:
            fds[name] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in _JOIN_ORDER:
            if name in fds:
                syscalls.setns(fds[name], _NSTYPE[name])
        # setns into a mount namespace leaves us at its root mount, but the container
        # pivoted: enter its root as PID 1 sees it.
        os.fchdir(root)
        os.chroot(".")
    finally:
        for fd in [*fds.values(), root]:
            os.close(fd)


def _child(setup: Setup, sock: socket.socket, tty: bool) -> NoReturn:
    try:
        go = _sync.receive(sock)  # the engine has put us in the container's cgroup
        if not go or go.get("type") != "proceed":
            os._exit(125)
        if tty:  # a session of its own, the terminal on stdin its controlling one
            try:
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            except OSError as exc:
                raise StepError("tty", exc.errno or 0, f"cannot take the terminal: {exc}") from exc
        setup.run()
    except StepError as exc:
        with contextlib.suppress(OSError):
            _sync.send(sock, _sync.error_message(exc.step, exc.errno, exc.message, exc.exit_code))
        os._exit(exc.exit_code)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            _sync.send(sock, _sync.error_message("exec", 0, f"{type(exc).__name__}: {exc}"))
        os._exit(125)


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    message = _sync.receive(sock)
    if not message or message.get("type") != "exec":
        return 125
    try:
        setup = Setup({"steps": message["steps"]})  # reads the seccomp program from the host
        _faults.point("exec.setup")  # before setns: the fault directory is in reach
        _join(int(message["pid"]))
        pid = os.fork()
    except OSError as exc:
        _sync.send(sock, _sync.error_message("setns", exc.errno or 0, str(exc)))
        return 125
    if pid == 0:
        _child(setup, sock, bool(message.get("tty")))
    _sync.send(sock, {"type": "created", "pid": pid})
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    with contextlib.suppress(OSError):
        _sync.send(sock, {"type": "exited", "exit_code": code, "signal": 0})
    return code


if __name__ == "__main__":
    sys.exit(main())

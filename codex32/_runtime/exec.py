"""``python -S -m codex32._runtime.exec FD``: run one more process in a running container.

Joins PID 1's namespaces (the user namespace first, so that it owns the rest),
forks into its pid namespace, then applies the container's own privilege steps
(bounding set, user, capabilities, no_new_privs, seccomp) before exec: the new
process is confined exactly like the container's command. Its exit code becomes
this process's exit code; a failure before exec is reported on FD as the launch
protocol's ``error`` message (see ``_sync``).

Nothing of the container can reach the engine (issue 11): FD is close-on-exec and
the child closes it at once; the child talks to this process on a socket of its
own, close-on-exec, so its end closes when the command starts; the engine gets the
child as a pidfd, never as a number; this process is non-dumpable from before it
joins anything until the exec, so a container process cannot ptrace it or take its
descriptors through /proc.

=========  =========  ===============================================================
from       to         message (on FD unless said)
=========  =========  ===============================================================
engine     _exec      ``{"type": "exec", "pid": PID1, "steps": [...], "tty": bool}``
_exec      engine     ``{"type": "created"}`` with the child's pidfd (SCM_RIGHTS)
engine     _exec      ``{"type": "proceed"}`` (the child is in the cgroup) or hang-up
_exec      child      ``{"type": "proceed"}`` (on the child's own socket)
child      _exec      ``error`` (relayed to the engine) or end-of-file at exec
_exec      engine     ``{"type": "exited", "exit_code": C, "signal": 0}``
=========  =========  ===============================================================
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
import termios
import time
from typing import Any, NoReturn

from codex32._linux import caps, syscalls
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


class _ExecSetup(Setup):
    """The container's privilege steps, run beside its processes: non-dumpable until
    exec even where a uid change would undo it (fs.suid_dumpable=1)."""

    pause = 0.0  # tests only: hold the window before seccomp open (CODEX32_TEST_EXEC_PAUSE)

    def _user(self, step: dict[str, Any]) -> None:
        super()._user(step)
        caps.set_undumpable()

    def _seccomp(self, step: dict[str, Any]) -> None:
        if self.pause:  # capabilities dropped, no seccomp yet: runc's CVE-2016-9962 window
            time.sleep(self.pause)
        super()._seccomp(step)


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
    """The new process, in the container's pid namespace: wait for the go-ahead on
    ``sock`` (its own socket with us, close-on-exec), set up and exec."""
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


def _wait(pid: int) -> int:
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue


def main() -> int:
    fd = int(sys.argv[1])
    # Nothing this process execs or forks into the container may hold the engine's
    # socket, and no process of the container may ptrace us or open our descriptors
    # through /proc while we join it (runc's CVE-2016-9962 fix): both before setns.
    os.set_inheritable(fd, False)
    caps.set_undumpable()
    engine = socket.socket(fileno=fd)
    message = _sync.receive(engine)
    if not message or message.get("type") != "exec":
        return 125
    try:
        setup = _ExecSetup({"steps": message["steps"]})  # reads the seccomp program
        setup.pause = float(message.get("pause") or 0)
        _faults.point("exec.setup")  # before setns: the fault directory is in reach
        _join(int(message["pid"]))
        ours, theirs = _sync.socket_pair()
        pid = os.fork()
    except OSError as exc:
        _sync.send(engine, _sync.error_message("setns", exc.errno or 0, str(exc)))
        return 125
    if pid == 0:
        engine.close()
        ours.close()
        _child(setup, theirs, bool(message.get("tty")))
    theirs.close()
    # The engine learns the pid from the kernel: a pidfd, which names this child and
    # no other, whatever its number (the engine reads the pid from its fdinfo).
    pidfd = os.pidfd_open(pid)
    try:
        _sync.send_with_fd(engine, {"type": "created"}, pidfd)
    finally:
        os.close(pidfd)
    go = _sync.receive(engine)
    if not go or go.get("type") != "proceed":
        os.kill(pid, signal.SIGKILL)
        _wait(pid)
        return 125
    _sync.send(ours, {"type": "proceed"})
    # An error before exec, or end-of-file: the child's socket is close-on-exec, so
    # once the command runs nothing of the container can write to us.
    outcome = _sync.receive(ours)
    ours.close()
    if outcome is not None and outcome.get("type") == "error":
        with contextlib.suppress(OSError):
            _sync.send(engine, outcome)
    status = _wait(pid)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
    with contextlib.suppress(OSError):
        _sync.send(engine, {"type": "exited", "exit_code": code, "signal": 0})
    return code


if __name__ == "__main__":
    sys.exit(main())

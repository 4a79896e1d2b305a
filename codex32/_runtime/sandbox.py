"""A sandbox made ahead of its container: the engine's side of ``monitor._serve_sandbox``.

A fork server's child is asked to become a monitor *before* any container exists:
it forks stage2, which enters the namespaces of a shape (the plan's namespaces and id
maps) and forks PID 1, which then blocks on its socket holding /dev/null and nothing
else. ``claim`` hands it one container's plan, monitor settings and stdio; from then
on it is that container's monitor exactly as a freshly forked one would be (the
launch protocol continues at ``created``). A sandbox serves one container and is
never reused; dropping it (``discard``) makes its monitor kill PID 1 unused.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from codex32._linux import process as process_info
from codex32._plan.plan import Plan
from codex32._runtime import protocol as _sync
from codex32._runtime.launch import FileArg, ForkServer, _Descriptors
from codex32.errors import LaunchError, printable

if TYPE_CHECKING:
    from codex32._cgroups.driver import Cgroup

#: How long a sandbox's monitor may take to report PID 1.
READY_TIMEOUT = 10.0
#: How long ``discard`` waits for a killed PID 1 to be gone.
DISCARD_WAIT = 2.0

Shape = str


def shape_of(plan: Plan) -> Shape:
    """The pool key of a plan: its namespaces and id maps, canonically written."""
    shape = {key: getattr(plan, key) for key in _sync.SHAPE_KEYS}
    return json.dumps(shape, sort_keys=True, separators=(",", ":"))


@dataclass
class Sandbox:
    """One sandbox in the pool: its monitor's socket and PID 1 (as a pidfd too)."""

    shape: Shape
    sock: socket.socket
    pid: int
    pidfd: int
    cgroup: Cgroup | None = None  # the pool's cgroup PID 1 was placed in (v1), if any

    @classmethod
    def make(cls, fork_server: ForkServer, shape: Shape) -> Sandbox | None:
        """Have the fork server make one; None if it cannot serve this thread."""
        ours, theirs = _sync.socket_pair()
        try:
            null = subprocess.DEVNULL
            if not fork_server.spawn(theirs.fileno(), null, null, null):
                ours.close()
                return None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            _sync.send(ours, {"type": "sandbox", "shape": json.loads(shape)})
            ours.settimeout(READY_TIMEOUT)
            message = _sync.receive(ours)
            ours.settimeout(None)
            if not message or message.get("type") != "ready":
                detail = printable(message.get("message")) if message else "no answer"
                raise LaunchError(f"a pooled sandbox could not be made: {detail}", step="pool")
            pid = int(message["pid"])
            if not process_info.is_namespace_init(pid):
                raise LaunchError(
                    f"pid {pid} is not the first process of a pid namespace", step="pool"
                )
            pidfd = os.pidfd_open(pid)
        except BaseException:
            ours.close()  # the monitor kills its PID 1 on the hang-up
            raise
        return cls(shape=shape, sock=ours, pid=pid, pidfd=pidfd)

    def alive(self) -> bool:
        """Whether PID 1 still waits (its pidfd turns readable when it exits)."""
        return self.pidfd >= 0 and not _readable(self.pidfd, 0)

    def claim(
        self,
        plan: Mapping[str, Any],
        monitor: Mapping[str, object],
        stdin: FileArg,
        stdout: FileArg,
        stderr: FileArg,
    ) -> socket.socket:
        """Give the sandbox to one container; return the socket the launch goes on with."""
        message = {"type": "claim", "plan": dict(plan), "monitor": dict(monitor)}
        with _Descriptors((stdin, stdout, stderr)) as stdio:
            _sync.send_with_fds(self.sock, message, stdio)
        return self.sock

    def claimed(self) -> None:
        """The container runs in it now (``created`` came): the pidfd is not needed."""
        self._close_pidfd()

    def discard(self) -> None:
        """End it unused: PID 1 is killed (and gone when this returns, so that nothing
        of it is left in a cgroup the start goes on with), the monitor hung up on."""
        if self.pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            _readable(self.pidfd, DISCARD_WAIT)
        with contextlib.suppress(OSError):
            self.sock.close()
        self._close_pidfd()

    def _close_pidfd(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def _readable(fd: int, timeout: float) -> bool:
    """Whether ``fd`` polls readable within ``timeout`` seconds (poll: any fd number)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))

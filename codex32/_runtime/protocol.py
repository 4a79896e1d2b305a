"""The launch protocol between the engine, the monitor and the set-up (``_init``).

Messages are JSON objects, one per datagram, on an AF_UNIX SOCK_SEQPACKET pair
(message boundaries for free). runc's ``sync.go`` is the model. Roles:

* engine   - the caller's process (CLI, script, host service; may be threaded)
* stage1   - the container's monitor (``_monitor.serve``), single-threaded: forked by
             the engine's fork server (``_forkserver``), so its command line reads
             ``-m codex32._runtime.forkserver`` and its name is ``c32mon-<id8>``; the CLI's
             ``--once`` server becomes the monitor itself, and ``python -S -m
             codex32._runtime.monitor FD`` is started instead when the server cannot serve
             the calling thread (other namespaces). It stays in the host's
             namespaces, is a child subreaper, and supervises the container
* stage2   - forked by stage1: enters the user namespace (id maps written by stage1),
             then the pid/mount/uts/ipc/net/time namespaces, forks PID 1 and exits
* pid1     - the container's first process: runs the plan's steps, then execs

=========  ==============  ==============================================================
from       to              message
=========  ==============  ==============================================================
engine     stage1          ``{"type": "plan", "plan": {...}, "monitor": {...}}``
stage2     stage1          ``{"type": "map_request"}``  (after unshare(CLONE_NEWUSER))
stage1     stage2          ``{"type": "map_done"}``, or it hangs up if the maps fail
stage2     stage1          ``{"type": "pid"}`` with PID 1's pidfd attached (SCM_RIGHTS):
                           the monitor reads the pid from the kernel (fdinfo)
stage1     engine          ``{"type": "created", "pid": N}``: namespaces exist, nothing
                           of the container runs yet; the engine checks that N is
                           PID 1 of a pid namespace (NSpid), then puts it in its
                           cgroup and wires its network
engine     stage1          ``{"type": "proceed"}`` or ``{"type": "abort"}``
stage1     pid1            ``{"type": "proceed"}`` (relayed)
pid1       stage1          ``{"type": "console"}`` with the master of PID 1's terminal
                           attached (SCM_RIGHTS), for ``-t`` (the plan's ``console``
                           step: a pty of the container's own devpts)
stage1     pid1            ``{"type": "console_done"}``: the window size is set
pid1       stage1          ``{"type": "error", "step", "errno", "message", "exit_code"}``
                           or end-of-file: the socket is close-on-exec, so EOF means
                           the exec succeeded
stage1     engine          ``{"type": "started", "pid": N}`` or the error, relayed
stage1     engine          ``{"type": "exited", "exit_code": C, "signal": S}`` once PID 1
                           is reaped (signal is 0 for a normal exit)
=========  ==============  ==============================================================

A pooled sandbox (``sandbox``, ``_engine.pool``) runs the same table in two parts:

=========  ==============  ==============================================================
engine     stage1          ``{"type": "sandbox", "shape": {namespaces, id maps}}``
                           instead of the plan; stage1 forks stage2 as above
stage1     engine          ``{"type": "ready", "pid": N}``: PID 1 waits, holding /dev/null
engine     stage1          ``{"type": "claim", "plan", "monitor"}`` with the caller's
                           stdin, stdout, stderr attached; a plan of another shape is
                           answered with an ``error`` (step ``claim``) and PID 1 killed
stage1     pid1            ``{"type": "claimed", "process_name"}``: named as a fresh PID 1
stage1     engine          ``created``, then as above; the ``proceed`` relayed to PID 1
                           carries ``"plan"`` and PID 1's stdin, stdout, stderr
=========  ==============  ==============================================================

The engine's ``proceed`` may carry ``"cgroup_paths"`` (where it placed PID 1), which the
monitor records with the start.

Any failure before ``started`` reaches the engine as an ``error`` message naming the
step; stage1 then makes sure PID 1 is dead and reaped before it exits itself. Every
end of these sockets is close-on-exec (the monitor closes the engine's in stage2), so
the container's command holds none of them, and the engine prints an error's text
only through ``errors.printable`` (one line, control characters escaped). ``exec`` has a
table of its own in ``_exec``.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

MAX_MESSAGE = 1 << 20

#: The plan's fields a pooled sandbox is made to (``sandbox``, ``monitor``): a claim
#: must ask for exactly these.
SHAPE_KEYS = ("namespaces", "uid_mappings", "gid_mappings")

Message = dict[str, Any]


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """A close-on-exec SEQPACKET pair."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: Message) -> None:
    """Send one message."""
    sock.sendall(json.dumps(message, separators=(",", ":")).encode())


def receive(sock: socket.socket) -> Message | None:
    """Receive one message; ``None`` at end-of-file (the peer closed or exec'd)."""
    data = sock.recv(MAX_MESSAGE)
    return _decode(data) if data else None


def _decode(data: bytes) -> Message:
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"malformed sync message: {data[:200]!r}")
    return message


def send_with_fd(sock: socket.socket, message: Message, fd: int) -> None:
    """Send one message with a descriptor attached (SCM_RIGHTS)."""
    socket.send_fds(sock, [json.dumps(message, separators=(",", ":")).encode()], [fd])


def send_with_fds(sock: socket.socket, message: Message, fds: list[int]) -> None:
    """Send one message with any number of descriptors attached (none: a plain send)."""
    if not fds:
        send(sock, message)
        return
    socket.send_fds(sock, [json.dumps(message, separators=(",", ":")).encode()], fds)


def receive_with_fds(sock: socket.socket) -> tuple[Message | None, list[int]]:
    """Receive one message and the descriptors attached to it, if any."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return _decode(data), list(fds)


def adopt_stdio(fds: list[int]) -> None:
    """Make three received descriptors (numbered above 2, as received ones are while
    0-2 are open) our stdin, stdout and stderr, and close the received ones."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)


def error_message(step: str, errno: int, message: str, exit_code: int = 125) -> Message:
    """The one shape every failure takes on the wire."""
    return {
        "type": "error",
        "step": step,
        "errno": errno,
        "message": message,
        "exit_code": exit_code,
    }

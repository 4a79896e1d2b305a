"""The engine's side of published ports: bind the host sockets, start and stop the proxy.

Why a userspace proxy (``codex32._network.portproxy``) and not kernel NAT: see
``docs/networking.md``. In short, it is reachable on every host address including
127.0.0.1 (DNAT to a bridge needs ``route_localnet`` hacks for loopback), it answers to
the host's firewall like any service (DNAT bypasses INPUT), a taken port is an
``EADDRINUSE`` at once whoever holds it, and it cannot outlive its container.

The sockets are bound here, in the engine, in the caller's network namespace (the
"host"), and handed to the proxy with ``pass_fds``.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from codex32.errors import NetworkError

_BACKLOG = 511
_SPAWN_TIMEOUT = 10.0

# The proxy, as the monitor, runs without site-packages and finds codex32 by path.
_PROXY_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
}


@dataclass(frozen=True)
class Publish:
    """One host socket to open and where its traffic goes."""

    host_ip: str
    host_port: int
    protocol: str
    container_address: str
    container_port: int

    def describe(self) -> str:
        return f"{self.host_ip}:{self.host_port}/{self.protocol}"


def bind_listeners(ports: Sequence[Publish]) -> list[socket.socket]:
    """Bind (and for TCP, listen on) every host port; all or none.

    A taken port raises NetworkError with EADDRINUSE naming it; the sockets already
    bound by this call are closed again.
    """
    bound: list[socket.socket] = []
    try:
        for port in ports:
            kind = socket.SOCK_STREAM if port.protocol == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind)
            bound.append(sock)
            if port.protocol == "tcp":
                # TIME_WAIT left by an earlier run must not block a restart.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((port.host_ip, port.host_port))
                if port.protocol == "tcp":
                    sock.listen(_BACKLOG)
            except OSError as exc:
                raise NetworkError(
                    f"cannot publish port {port.describe()}: "
                    + (
                        "it is already in use on the host"
                        if exc.errno == errno_module.EADDRINUSE
                        else "the host refuses it"
                    ),
                    step="network.ports",
                    errno=exc.errno,
                    hint="choose another host port, or stop what holds it"
                    if exc.errno == errno_module.EADDRINUSE
                    else "is the host address one of this host's?",
                ) from exc
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def start_proxy(
    container_id: str, pid1: int, ports: Sequence[Publish], sockets: Sequence[socket.socket]
) -> int:
    """Start the proxy for a container's published ports; return the daemon's pid.

    The sockets stay open here too; the caller closes its copies afterwards.
    """
    step = "network.ports"
    try:
        pidfd = os.pidfd_open(pid1)
    except OSError as exc:
        raise NetworkError(
            "cannot watch the container's PID 1 for the port proxy", step=step, errno=exc.errno
        ) from exc
    try:
        spec = {
            "container": container_id,
            "pidfd": pidfd,
            "listeners": [
                {
                    "fd": sock.fileno(),
                    "protocol": port.protocol,
                    "address": port.container_address,
                    "port": port.container_port,
                }
                for port, sock in zip(ports, sockets, strict=True)
            ],
        }
        fds = (pidfd, *(s.fileno() for s in sockets))
        try:
            result = subprocess.run(
                [sys.executable, "-S", "-m", "codex32._network.portproxy", json.dumps(spec)],
                pass_fds=fds,
                env=_PROXY_ENV,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_SPAWN_TIMEOUT,
                start_new_session=True,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NetworkError(f"cannot start the port proxy: {exc}", step=step) from exc
        text = result.stdout.decode(errors="replace").strip()
        if result.returncode != 0 or not text.isdigit():
            raise NetworkError(
                "the port proxy did not start: "
                + (
                    result.stderr.decode(errors="replace").strip()[-500:]
                    or f"status {result.returncode}"
                ),
                step=step,
            )
        return int(text)
    finally:
        os.close(pidfd)


def stop_process(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM ``pid`` and wait (pidfd) until it is gone; SIGKILL after ``timeout``.

    The caller has checked that ``pid`` is still the process it started (start time).
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
            poller = select.poll()  # (select() refuses descriptors numbered 1024 and up)
            poller.register(pidfd, select.POLLIN)
            if poller.poll(timeout * 1000):
                return
    finally:
        os.close(pidfd)

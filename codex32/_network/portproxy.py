"""A container's published ports: a small userspace proxy, one process per container.

``python -S -m codex32._network.portproxy SPEC`` where SPEC is JSON::

    {"container": ID, "pidfd": FD, "listeners": [
        {"fd": FD, "protocol": "tcp"|"udp", "address": "10.88.0.5", "port": 80}, ...]}

The engine binds the host sockets itself (so a port already taken is reported at once,
as a clear error, whoever holds it) and passes them, with a pidfd of the container's
PID 1, to this process. It forks once so that it is nobody's child but init's, prints
the daemon's pid on stdout for the engine to record and closes it, drops to ``nobody``
(it needs no privilege to accept on sockets it was handed and to connect to the
container), then relays:

* TCP: each accepted connection gets its own connection to the container's address;
  bytes flow both ways with back-pressure, and half-closes are passed on.
* UDP: one connected socket towards the container per client address, so replies go
  back to the right client; idle flows are dropped after two minutes.

It exits when the container's PID 1 exits (the pidfd becomes readable) or on SIGTERM,
so a crash of the engine never leaves a port held for a dead container. Standard
library only (asyncio), started without site-packages, as the monitor is.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import os
import resource
import signal
import socket
import sys
import time
from typing import Any

_CONNECT_TIMEOUT = 10.0
_UDP_IDLE = 120.0
_UDP_MAX_FLOWS = 4096
_CHUNK = 1 << 16
_NOBODY = 65534
_PR_SET_NAME = 15
_PR_SET_NO_NEW_PRIVS = 38


def _daemonize() -> None:
    """Fork; the parent reports the daemon's pid on stdout and exits."""
    pid = os.fork()
    if pid:
        os.write(1, f"{pid}\n".encode())
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _confine(container_id: str) -> None:
    """Many descriptors, a recognisable name, then no privileges at all."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(f"c32proxy-{container_id[:6]}".encode()), 0, 0, 0)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.setgroups([])
    os.setresgid(_NOBODY, _NOBODY, _NOBODY)
    os.setresuid(_NOBODY, _NOBODY, _NOBODY)
    libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)


# -- TCP ---------------------------------------------------------------------------


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end-of-file, then pass the half-close on."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()


async def _relay_tcp(
    address: str, port: int, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
) -> None:
    try:
        try:
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection(address, port), _CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            return  # nothing listens in the container (yet): the client sees a close
        try:
            await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))
        finally:
            upstream_w.close()
    finally:
        client_w.close()


# -- UDP ---------------------------------------------------------------------------


class _UdpFront(asyncio.DatagramProtocol):
    """The published UDP socket: one connected socket to the container per client."""

    def __init__(self, address: str, port: int) -> None:
        self.target = (address, port)
        self.transport: Any = None  # asyncio's datagram transport (a private class)
        self.flows: dict[Any, tuple[socket.socket, float]] = {}
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            if len(self.flows) >= _UDP_MAX_FLOWS:
                self._drop(min(self.flows, key=lambda a: self.flows[a][1]))
            back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            back.setblocking(False)
            try:
                back.connect(self.target)
            except OSError:
                back.close()
                return
            self.loop.add_reader(back.fileno(), self._reply, addr)
            flow = (back, time.monotonic())
        self.flows[addr] = (flow[0], time.monotonic())
        with contextlib.suppress(OSError):
            flow[0].send(data)  # a full buffer drops the datagram, as the network may

    def _reply(self, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            return
        try:
            data = flow[0].recv(_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            return  # ICMP port unreachable and the like: nothing to pass on
        self.flows[addr] = (flow[0], time.monotonic())
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def _drop(self, addr: Any) -> None:
        back, _ = self.flows.pop(addr)
        self.loop.remove_reader(back.fileno())
        back.close()

    def expire(self) -> None:
        """Forget flows idle for longer than ``_UDP_IDLE``."""
        now = time.monotonic()
        for addr in [a for a, (_, seen) in self.flows.items() if now - seen > _UDP_IDLE]:
            self._drop(addr)


def _same(front: _UdpFront) -> _UdpFront:
    """The protocol factory asyncio wants, for a protocol made beforehand."""
    return front


async def _expire_loop(fronts: list[_UdpFront]) -> None:
    while True:
        await asyncio.sleep(_UDP_IDLE / 4)
        for front in fronts:
            front.expire()


# -- main --------------------------------------------------------------------------


async def _serve(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def stop() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(int(spec["pidfd"]), stop)
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    servers: list[asyncio.AbstractServer] = []
    fronts: list[_UdpFront] = []
    for item in spec["listeners"]:
        sock = socket.socket(fileno=int(item["fd"]))
        address, port = str(item["address"]), int(item["port"])
        if item["protocol"] == "tcp":

            async def handle(
                r: asyncio.StreamReader,
                w: asyncio.StreamWriter,
                address: str = address,
                port: int = port,
            ) -> None:
                await _relay_tcp(address, port, r, w)

            servers.append(await asyncio.start_server(handle, sock=sock))
        else:
            front = _UdpFront(address, port)
            await loop.create_datagram_endpoint(functools.partial(_same, front), sock=sock)
            fronts.append(front)
    expiry = asyncio.ensure_future(_expire_loop(fronts)) if fronts else None
    await done
    if expiry is not None:
        expiry.cancel()
    for server in servers:
        server.close()


def main() -> int:
    """Entry point: daemonize, confine, relay until the container's PID 1 exits."""
    spec = json.loads(sys.argv[1])
    _daemonize()
    with contextlib.suppress(OSError):
        os.setsid()  # its own session: no terminal signals from the engine's
    _confine(str(spec["container"]))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    asyncio.run(_serve(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())

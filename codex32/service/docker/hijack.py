"""Hijacked connections: ``101 UPGRADED``, then raw bytes both ways (attach, exec start).

aiohttp's web server can do this where uvicorn and hypercorn cannot (see
docs/architecture.md): its request parser knows ``Upgrade: tcp``, a 101 response is
neither chunked nor length-bound, and bytes after the upgrade go to a parser we
set. Two things are added here:

* the connection's protocol answers ``eof_received`` with True, so the client's
  half-close (the CLI shuts its write side right after the 101 when it has no
  stdin to send) ends the container's stdin but not our writing;
* the head is not only written but read: docker-py parses it through a buffered
  reader and then reads the raw socket, so output that reaches it in the same read
  as the head is lost (docker-py issue 3332). On a unix socket ``SIOCOUTQ`` counts
  the bytes the peer has not consumed yet; the stream starts once it is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
import time
from typing import Any

from aiohttp import web
from aiohttp.web_log import AccessLogger
from aiohttp.web_protocol import RequestHandler

from .wire import MULTIPLEXED, RAW_STREAM, frame

#: The longest a stream waits for the client to read the 101 head.
HEAD_READ_TIMEOUT = 2.0
#: Bytes of unread stdin after which the connection stops being read.
_STDIN_HIGH_WATER = 1 << 20


class RawInput:
    """What the client sends after the upgrade (the container's stdin), as a queue.

    aiohttp hands the bytes that follow an upgrade to a "payload parser"
    (``feed_data``/``feed_eof``); this one queues them, pausing the transport when the
    reader falls behind.
    """

    def __init__(self, transport: asyncio.Transport | None) -> None:
        self._transport = transport
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._paused = False
        self._ended = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data and not self._ended:
            self._queue.put_nowait(bytes(data))
            self._queued += len(data)
            if self._queued > _STDIN_HIGH_WATER and self._transport is not None:
                with contextlib.suppress(RuntimeError):
                    self._transport.pause_reading()
                    self._paused = True
        return False, b""

    def feed_eof(self) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(None)

    async def read(self) -> bytes:
        """The next bytes; ``b""`` once the client has half-closed or gone."""
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # every later read sees the end too
            return b""
        self._queued -= len(item)
        if self._paused and self._queued < _STDIN_HIGH_WATER // 2 and self._transport:
            with contextlib.suppress(RuntimeError):
                self._transport.resume_reading()
            self._paused = False
        return item


class HijackableRequestHandler(RequestHandler):
    """aiohttp's protocol, kept half-open when the client shuts its write side."""

    raw_input: RawInput | None = None
    peer_write_closed: bool = False

    def eof_received(self) -> bool:  # type: ignore[override]
        # True keeps the transport open for writing (asyncio.Protocol's contract).
        self.peer_write_closed = True
        if self.raw_input is not None:
            self.raw_input.feed_eof()
        return True


class HijackableServer(web.Server):
    """The protocol factory: aiohttp's, with the half-open handler."""

    def __init__(
        self, handler: Any, *, request_factory: Any, handler_cancellation: bool, **options: Any
    ) -> None:
        super().__init__(
            handler,
            request_factory=request_factory,
            handler_cancellation=handler_cancellation,
            **options,
        )
        self._handler_options = options  # RequestHandler's own keywords
        self._handler_loop = asyncio.get_running_loop()

    def __call__(self) -> RequestHandler:
        return HijackableRequestHandler(self, loop=self._handler_loop, **self._handler_options)


class DockerAppRunner(web.AppRunner):
    """An AppRunner whose connections use :class:`HijackableRequestHandler`.

    aiohttp has no public hook for the protocol class, so ``_make_server`` (the one
    place the runner builds its ``Server``) is wrapped: the app's own server is made as
    usual (startup signals, freezing) and its public parts handed to ours. The Docker
    tests exercise the half-close, so an aiohttp change here would fail them.
    """

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        return HijackableServer(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            access_log_class=AccessLogger,
            access_log=None,
        )


def _unread_bytes(sock: socket.socket) -> int:
    """Bytes sent on a unix socket that the peer has not consumed (SIOCOUTQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


class Hijack:
    """One hijacked stream to the client: frames or raw bytes, then the end."""

    def __init__(self, request: web.Request, response: web.StreamResponse, tty: bool) -> None:
        self._request = request
        self._response = response
        self.tty = tty
        protocol = request.protocol
        self.stdin: RawInput | None = None
        if isinstance(protocol, HijackableRequestHandler) and response.status == 101:
            transport = request.transport
            self.stdin = RawInput(transport if isinstance(transport, asyncio.Transport) else None)
            protocol.raw_input = self.stdin
            protocol.set_parser(self.stdin)  # type: ignore[arg-type]
            if protocol.peer_write_closed:
                self.stdin.feed_eof()
        self._closed = False

    @classmethod
    async def open(cls, request: web.Request, *, tty: bool, multiplexed_type: bool) -> Hijack:
        """Answer the request: ``101 UPGRADED`` when it asked to upgrade (else a 200
        stream, as Moby), and return once the client has read the head."""
        content_type = RAW_STREAM if tty or not multiplexed_type else MULTIPLEXED
        upgrade = request.headers.get("Upgrade", "").lower() == "tcp"
        if upgrade:
            response = web.StreamResponse(status=101, reason="UPGRADED")
            response.headers["Connection"] = "Upgrade"
            response.headers["Upgrade"] = "tcp"
        else:
            response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = content_type
        response.force_close()
        await response.prepare(request)
        hijack = cls(request, response, tty)
        await hijack._head_read()
        return hijack

    async def _head_read(self) -> None:
        transport = self._request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or sock.family != socket.AF_UNIX:
            return
        deadline = time.monotonic() + HEAD_READ_TIMEOUT
        while time.monotonic() < deadline:
            if transport is None or transport.is_closing():
                return
            if transport.get_write_buffer_size() == 0:
                try:
                    if _unread_bytes(sock) == 0:
                        return
                except OSError:
                    return
            await asyncio.sleep(0.0005)

    async def write(self, stream: int, data: bytes) -> None:
        """Send output: as a frame of ``stream`` without a terminal, raw with one."""
        if not data or self._closed:
            return
        payload = data if self.tty else frame(stream, data)
        try:
            await self._response.write(payload)
        except (ConnectionError, RuntimeError):
            self._closed = True

    @property
    def gone(self) -> bool:
        """Whether the client has closed the connection."""
        transport = self._request.transport
        return self._closed or transport is None or transport.is_closing()

    async def close(self) -> web.StreamResponse:
        """End the stream: the connection closes once the handler returns it."""
        self._closed = True
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._response.write_eof()
        return self._response

"""Listening sockets and who is on the other end: shared by the native and Docker servers.

* :func:`unix_listener` makes a unix socket ``0660 root:codex32`` (Docker's
  ``docker.sock`` convention: membership of the group is the permission), refusing
  to take over a socket a live server still answers on.
* :class:`Peer` is the caller: ``SO_PEERCRED`` (uid, gid, pid) on a unix socket, the
  address on TCP. The uvicorn protocol classes below put it into every request's
  scope (``request.state.codex32_peer``), since ASGI itself does not carry it.
* :class:`UvicornServer` runs one ASGI app on given sockets inside the running loop,
  without signal handlers of its own: the extra servers ``codex32 serve`` starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import ssl as ssl_module
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uvicorn import Config, Server
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from codex32 import ConfigError

log = logging.getLogger("codex32.service")

#: The key under which the caller's :class:`Peer` is in ``scope["state"]``.
PEER_KEY = "codex32_peer"
DEFAULT_GROUP = "codex32"
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True)
class Peer:
    """Who is calling: by credentials on a unix socket, by address on TCP."""

    transport: str  # "unix" or "tcp"
    pid: int | None = None
    uid: int | None = None
    gid: int | None = None
    address: str | None = None

    def describe(self) -> str:
        if self.transport == "unix":
            return f"uid={self.uid} gid={self.gid} pid={self.pid}"
        return f"tcp {self.address}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def peer_of(sock: socket.socket | None) -> Peer | None:
    """The peer of a connected socket (``SO_PEERCRED`` for unix sockets)."""
    if sock is None:
        return None
    if sock.family == socket.AF_UNIX:
        data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, gid = _UCRED.unpack(data)
        return Peer("unix", pid=pid, uid=uid, gid=gid)
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return Peer("tcp")
    return Peer("tcp", address=f"{host}:{port}")


def peer_of_transport(transport: asyncio.BaseTransport) -> Peer | None:
    return peer_of(transport.get_extra_info("socket"))


def peer_from_scope(scope: Any) -> Peer | None:
    """The caller recorded by the protocol classes below (None if they were not used)."""
    state = scope.get("state") or {}
    peer = state.get(PEER_KEY)
    return peer if isinstance(peer, Peer) else None


class PeerHTTPProtocol(H11Protocol):
    """uvicorn's h11 protocol, recording the connection's peer for the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.app_state = {**self.app_state, PEER_KEY: peer_of_transport(transport)}
        super().connection_made(transport)


class PeerWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, recording the connection's peer for the app."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.app_state = {**self.app_state, PEER_KEY: peer_of_transport(transport)}
        super().connection_made(transport)


def group_id(name: str | None) -> int:
    """The gid of ``name``; root's (0) when there is no such group, with a warning
    (set-up creates ``codex32``; without it only root reaches the socket)."""
    if not name:
        return 0
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        log.warning("no group %r: the socket is root's only (setup.sh creates the group)", name)
        return 0


def unix_listener(
    path: str | os.PathLike[str], *, mode: int = 0o660, group: str | None = DEFAULT_GROUP
) -> socket.socket:
    """A listening unix socket at ``path``, ``mode`` and ``root:group`` from its birth.

    A stale socket file (no server answers) is replaced; a live one is an error, so
    that a second ``serve`` does not steal the first one's socket.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(
                f"{path} exists and is not a socket", hint="remove it, or pick another path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody listens
        else:
            raise ConfigError(
                f"a server already listens on {path}",
                hint="stop it first (systemctl stop codex32), or pick another --host",
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    gid = group_id(group)
    # Bound under a restrictive umask, then chowned and chmodded: never wider than asked.
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {path}", errno=exc.errno) from None
    finally:
        os.umask(old)
    os.chown(path, 0 if os.geteuid() == 0 else -1, gid if os.geteuid() == 0 else -1)
    os.chmod(path, mode)
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def tcp_listener(address: str) -> socket.socket:
    """A listening TCP socket for ``HOST:PORT`` (``[::1]:8032`` for IPv6)."""
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--listen {address!r}: use HOST:PORT, e.g. 127.0.0.1:8032") from None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {address}", errno=exc.errno) from None
    sock.listen(1024)
    sock.set_inheritable(False)
    return sock


def uvicorn_config(app: Any, **kwargs: Any) -> Config:
    """A uvicorn config with the peer-recording protocols and the service's defaults."""
    options: dict[str, Any] = {
        "http": PeerHTTPProtocol,
        "ws": PeerWebSocketProtocol,
        "log_config": None,  # the service's logging, not uvicorn's own
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        "ws_ping_interval": 20,
    }
    options.update(kwargs)
    return Config(app, **options)


class UvicornServer:
    """One ASGI app served on ``sockets`` in the running loop; ``stop()`` ends it.

    No signal handlers and no lifespan of its own: the process's main server owns
    both, and starts and stops these from its lifespan.
    """

    def __init__(
        self,
        app: Any,
        sockets: list[socket.socket],
        *,
        ssl_context: ssl_module.SSLContext | None = None,
        **options: Any,
    ) -> None:
        self.sockets = sockets
        config = uvicorn_config(app, lifespan="off", **options)
        config.load()
        if ssl_context is not None:
            config.ssl = ssl_context
        self._server = Server(config)
        self._loop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server.lifespan = self._server.config.lifespan_class(self._server.config)
        await self._server.startup(sockets=self.sockets)
        self._loop_task = asyncio.create_task(self._server.main_loop())

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._loop_task is not None:
            await self._loop_task
            self._loop_task = None
        await self._server.shutdown(sockets=self.sockets)
        for sock in self.sockets:
            sock.close()

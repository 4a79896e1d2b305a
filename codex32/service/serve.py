"""``codex32 serve``: one process, one event loop, the warm engine, every listener.

The unix socket (``/run/codex32/codex32.sock``, or the one systemd passes by socket
activation) is the main uvicorn server, which owns the signals and the lifespan; the
TCP listener and the Docker socket are extra servers started from that lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from pathlib import Path
from typing import Any

from codex32 import ConfigError
from codex32.service.app import create_app
from codex32.service.auth import init_token, load_token
from codex32.service.policy import Policy
from codex32.service.servers import RunningServer, ServiceContext
from codex32.service.settings import ServiceSettings
from codex32.service.sockets import UvicornServer, tcp_listener, unix_listener, uvicorn_config

log = logging.getLogger("codex32.service")

SD_LISTEN_FDS_START = 3


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed (socket activation), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count < 1:
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for the processes we start
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    sock.set_inheritable(False)
    return sock


def make_token(settings: ServiceSettings) -> tuple[str, Path]:
    """``--init-token``: a new token in the storage directory (0600)."""
    return init_token(settings.token_file), settings.token_file


def _tls(settings: ServiceSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate or key: {exc}") from None
    return context


def run(settings: ServiceSettings, *, log_level: str = "info") -> None:
    """Serve until SIGTERM/SIGINT; containers keep running after."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s codex32-service %(levelname)s %(message)s",
    )
    if os.geteuid() != 0:
        raise ConfigError(
            "codex32 serve needs root: the engine creates namespaces, mounts and cgroups",
            hint="run it with sudo, or as the systemd unit codex32.service",
        )
    policy = Policy.load(settings.policy_file)
    token = load_token(settings.token_file)
    if settings.listen is not None and token is None:
        raise ConfigError(
            f"TCP (--listen {settings.listen}) needs a token, and {settings.token_file} has none",
            hint="run codex32 serve --init-token first, then give the token to the clients",
        )
    tls = _tls(settings)
    tcp = tcp_listener(settings.listen) if settings.listen is not None else None
    activated = systemd_socket()
    main_socket = activated or unix_listener(
        settings.socket, mode=settings.socket_mode, group=settings.socket_group
    )
    holder: dict[str, Any] = {}

    async def start_tcp(_context: ServiceContext) -> RunningServer | None:
        if tcp is None:
            return None
        server = UvicornServer(holder["app"], [tcp], ssl_context=tls)
        await server.start()
        scheme = "https" if tls else "http"
        log.info("listening on %s://%s (bearer token required)", scheme, settings.listen)
        return server

    class _SocketFile:
        """Removes the socket file at shutdown (before uvicorn re-raises the signal)."""

        async def stop(self) -> None:
            with contextlib.suppress(OSError):
                settings.socket.unlink()

    async def own_socket_file(_context: ServiceContext) -> RunningServer | None:
        return None if activated is not None else _SocketFile()

    app = create_app(settings, policy, token=token, servers=[own_socket_file, start_tcp])
    holder["app"] = app
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, lifespan="on", log_level=log_level))
    where = "the socket systemd passed" if activated else str(settings.socket)
    log.info("listening on %s", where)
    try:
        asyncio.run(server.serve(sockets=[main_socket]))
    finally:
        if activated is None and not server.started:
            with contextlib.suppress(OSError):
                settings.socket.unlink()  # a start-up that failed leaves no socket
    if not server.started:
        raise ConfigError("the service did not start", hint="see the lines above")

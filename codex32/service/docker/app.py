"""The Docker-compatible socket: routes, middlewares, and the server on a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from pathlib import Path
from typing import Any

from aiohttp import web

from ..sockets import peer_of_transport
from . import containers, streams, system
from .backend import BACKEND, DockerBackend, docker_error
from .hijack import DockerAppRunner
from .wire import DockerAPIError, Handler, check_version, error_response

log = logging.getLogger("codex32.service.docker")

#: (method, path, handler, audited action or None). Every path is served both bare and
#: under ``/vX.Y``.
ROUTES: list[tuple[str, str, Handler, str | None]] = [
    ("GET", "/_ping", system.ping, None),
    ("GET", "/version", system.version, None),
    ("GET", "/info", system.info, None),
    ("GET", "/events", system.events, None),
    ("GET", "/containers/json", containers.list_containers, None),
    ("POST", "/containers/create", containers.create, "create"),
    ("POST", "/containers/prune", containers.prune, "prune"),
    ("GET", "/containers/{id}/json", containers.inspect, None),
    ("POST", "/containers/{id}/start", containers.start, "start"),
    ("POST", "/containers/{id}/stop", containers.stop, "stop"),
    ("POST", "/containers/{id}/restart", containers.restart, "restart"),
    ("POST", "/containers/{id}/kill", containers.kill, "kill"),
    ("POST", "/containers/{id}/pause", containers.pause, "pause"),
    ("POST", "/containers/{id}/unpause", containers.unpause, "unpause"),
    ("DELETE", "/containers/{id}", containers.remove, "remove"),
    ("POST", "/containers/{id}/wait", containers.wait, None),
    ("GET", "/containers/{id}/logs", containers.logs, None),
    ("GET", "/containers/{id}/stats", containers.stats, None),
    ("GET", "/containers/{id}/top", containers.top, None),
    ("GET", "/containers/{id}/export", containers.export, "export"),
    ("POST", "/containers/{id}/resize", containers.resize, None),
    ("POST", "/containers/{id}/attach", streams.attach, "attach"),
    ("POST", "/containers/{id}/exec", streams.exec_create, "exec"),
    ("POST", "/exec/{id}/start", streams.exec_start, "exec_start"),
    ("POST", "/exec/{id}/resize", streams.exec_resize, None),
    ("GET", "/exec/{id}/json", streams.exec_inspect, None),
    ("GET", "/images/json", system.images, None),
    ("POST", "/images/create", system.image_pull, None),
    ("GET", r"/images/{name:.+}/json", system.image_inspect, None),
    ("GET", "/networks", system.networks, None),
    ("POST", "/networks/create", system.network_create, "network_create"),
    ("GET", "/networks/{id}", system.network_inspect, None),
    ("DELETE", "/networks/{id}", system.network_remove, "network_remove"),
]

_ACTION = web.AppKey("codex32_docker_actions", dict)
_VERSION_PREFIX = r"/{version:v[0-9]+\.[0-9]+}"


@web.middleware
async def _answer_as_docker(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Version check first; every failure becomes Docker's ``{"message": ...}``; mutating
    calls are written to the audit log with the caller's credentials."""
    status = 500
    error: str | None = None
    try:
        asked = request.match_info.get("version")
        if asked:
            check_version(asked)
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status, error = exc.status, exc.reason
        if exc.status == 404:
            return error_response(404, f"page not found: {request.method} {request.path}")
        if exc.status == 405:
            return error_response(405, f"method {request.method} not allowed here")
        return error_response(exc.status, exc.reason)
    except (ConnectionError, asyncio.CancelledError):
        status, error = 499, "client went away"
        raise
    except Exception as exc:
        failure = docker_error(exc)
        if failure.status >= 500 and not isinstance(exc, DockerAPIError):
            log.exception("docker API %s %s failed", request.method, request.path)
        status, error = failure.status, failure.message
        return error_response(failure.status, failure.message)
    finally:
        _audit(request, status, error)


def _audit(request: web.Request, status: int, error: str | None) -> None:
    backend = request.app[BACKEND]
    route = request.match_info.route
    action = request.app[_ACTION].get(getattr(route.resource, "canonical", ""), None)
    if backend.audit is None or (action is None and status < 400):
        return
    transport = request.transport
    peer = peer_of_transport(transport) if transport is not None else None
    target = request.match_info.get("id") or request.query.get("name")
    try:
        backend.audit.record(
            peer=peer,
            token=None,
            method=request.method,
            path=request.path,
            status=status,
            action=action,
            target=target,
            error=error,
            api="docker",
        )
    except OSError:
        log.exception("cannot write the audit log")


def make_app(backend: DockerBackend) -> web.Application:
    """The aiohttp application of the Docker Engine API over ``backend``."""
    app = web.Application(middlewares=[_answer_as_docker], client_max_size=64 * 1024**2)
    app[BACKEND] = backend
    actions: dict[str, str] = {}
    for method, path, handler, action in ROUTES:
        for full in (path, _VERSION_PREFIX + path):
            resource = app.router.add_resource(full)
            resource.add_route(method, handler)
            if method == "GET" and path == "/_ping":
                resource.add_route("HEAD", handler)
            if action is not None:
                actions[resource.canonical] = action
    app[_ACTION] = actions

    async def close_backend(_app: web.Application) -> None:
        await backend.close()

    app.on_shutdown.append(close_backend)
    return app


class DockerServer:
    """The Docker API served on a listening unix socket, in the running loop."""

    def __init__(
        self, backend: DockerBackend, sock: socket.socket, path: Path | None = None
    ) -> None:
        """``path``: the socket's file, removed when the server stops."""
        self.backend = backend
        self.socket = sock
        self.path = path
        # handler_cancellation: a client that hangs up ends its request (a followed
        # log or event stream, a wait), as with Docker, instead of leaving it pending.
        self._runner = DockerAppRunner(
            make_app(backend),
            handle_signals=False,
            shutdown_timeout=2.0,
            handler_cancellation=True,
        )

    async def start(self) -> None:
        try:
            await self._runner.setup()
            await web.SockSite(self._runner, self.socket).start()
        except BaseException:
            await self._runner.cleanup()
            self.socket.close()
            raise

    async def stop(self) -> None:
        """Close the socket and end the connections (streams included)."""
        await self._runner.cleanup()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


async def start_server(context: Any) -> DockerServer | None:
    """The starter ``codex32 serve`` calls (``servers.SERVER_MODULES``): the Docker socket
    at ``settings.docker_socket`` with the native socket's mode and group, the service's
    engine, policy and audit log."""
    from ..sockets import unix_listener

    settings = context.settings
    if settings.docker_socket is None:
        return None
    sock = unix_listener(
        settings.docker_socket, mode=settings.socket_mode, group=settings.socket_group
    )
    extra = dict(settings.extra)
    isolation = extra.get("docker.isolation") or None
    from codex32 import IsolationType

    backend = DockerBackend(
        context.engine,
        context.policy,
        audit=context.audit,
        default_isolation=IsolationType(isolation) if isolation else None,
        default_network=extra.get("docker.network") or None,
    )
    server = DockerServer(backend, sock, Path(settings.docker_socket))
    await server.start()
    log.info("Docker API on unix://%s", settings.docker_socket)
    return server

"""The native API: a FastAPI application over the async face of the engine.

Start-up runs ``init_engine()`` (reconcile and recovery) and starts the extra servers
(the Docker socket, the TCP listener) with the same context; shutdown stops them and
runs ``shutdown_engine()``. Containers are not this process's children: they keep
running when it stops, and the next start-up finds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from codex32 import AsyncContainerEngine, IsolationType, init_engine, shutdown_engine
from codex32.service.audit import AuditLog
from codex32.service.auth import ERROR_KEY, AuthMiddleware
from codex32.service.errors import ApiError, from_exception, validation_message
from codex32.service.policy import Policy
from codex32.service.servers import ServerStarter, ServiceContext, start_all, stop_all
from codex32.service.settings import ServiceSettings

log = logging.getLogger("codex32.service")

API = "/api/v1"
#: The original design's deployment types (its ``DeploymentType``).
DEPLOYMENT_TYPES = ("local_process", "custom_container", "kubernetes_pod")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codex32")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(
    settings: ServiceSettings,
    policy: Policy,
    *,
    token: str | None = None,
    servers: list[ServerStarter] | None = None,
) -> Any:
    """The ASGI application (FastAPI wrapped in the auth/audit middleware).

    ``servers``: starters run at start-up beside the registered ones (``serve``
    passes the TCP listener's).
    """
    audit = AuditLog(settings.audit_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sync_engine = await init_engine(settings.storage_dir, sandbox_pool=settings.sandbox_pool)
        engine = AsyncContainerEngine(sync_engine)
        await engine.call(settings.state_dir().mkdir, mode=0o711, parents=True, exist_ok=True)
        context = ServiceContext(engine=engine, policy=policy, settings=settings, audit=audit)
        app.state.context = context
        from codex32.executor import AdaptiveExecutor

        # The bot executor (routes/bots.py) supervises the bots of this storage.
        bots = AdaptiveExecutor(sync_engine.settings.storage_dir, engine=sync_engine)
        app.state.bots = await bots.start()
        try:
            running = await start_all(context, servers or [])
        except BaseException:
            await bots.close()
            await engine.close()
            await shutdown_engine()
            raise
        log.info("codex32 service ready (storage %s)", sync_engine.settings.storage_dir)
        try:
            yield
        finally:
            await stop_all(running)
            await bots.close()
            await engine.close()
            await shutdown_engine()
            log.info("codex32 service stopped; containers keep running")

    app = FastAPI(
        title="Codex-32",
        version=_version(),
        description="REST and WebSocket API of the Codex-32 container engine.",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    _system_routes(app)
    from codex32.service.routes.bots import router as bots
    from codex32.service.routes.containers import router as containers
    from codex32.service.routes.events import router as events
    from codex32.service.routes.exec import router as exec_routes
    from codex32.service.routes.images import router as images
    from codex32.service.routes.networks import router as networks

    for router in (containers, exec_routes, images, networks, events, bots):
        app.include_router(router, prefix=API)
    return AuthMiddleware(app, token=token, audit=audit)


def _answer(request: Request, error: ApiError) -> JSONResponse:
    request.state.__setattr__(ERROR_KEY, error.message)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def engine_error(request: Request, exc: Exception) -> JSONResponse:
        return _answer(request, from_exception(exc))

    async def request_invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message = validation_message(exc.errors())
        return _answer(
            request, ApiError(400, message, "ConfigError", "see the schemas at /openapi.json")
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        hint = "see /docs for the endpoints" if exc.status_code in (404, 405) else None
        return _answer(request, ApiError(exc.status_code, str(exc.detail), kind, hint))

    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # The expected ones by class (answered, not logged as crashes); then the rest (a
    # 500 without traceback in the answer; Starlette logs it for the operator).
    from pydantic import ValidationError

    from codex32 import Codex32Error
    from codex32.service.errors import ApiProblemError

    for expected in (Codex32Error, ApiProblemError, ValidationError, TimeoutError, ValueError):
        app.add_exception_handler(expected, engine_error)
    # The rest: answered here rather than by Starlette's last-resort handler, which
    # re-raises after answering (uvicorn then drops the connection and logs twice).
    app.add_middleware(_CrashGuard)


class _CrashGuard:
    """Any other exception: a 500 with one message (its traceback goes to the log)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise  # mid-stream: nothing else can be said on this answer
            error = from_exception(exc)  # logs the traceback
            scope.setdefault("state", {})[ERROR_KEY] = error.message
            await JSONResponse(error.body(), status_code=error.status)(scope, receive, send)


def context_of(request: Any) -> ServiceContext:
    """The service's shared context (engine, policy, settings, audit)."""
    context: ServiceContext = request.app.state.context
    return context


def _system_routes(app: FastAPI) -> None:
    @app.get("/", tags=["system"])
    async def root(request: Request) -> dict[str, Any]:
        """Name, version, deployment types, isolation levels, the host's cgroup driver."""
        engine = context_of(request).engine
        cgroup = (await engine.call(engine.sync.info))["cgroup"]
        return {
            "name": "Codex-32",
            "version": _version(),
            "api": API,
            "container_engine": "custom",
            "deployment_types": list(DEPLOYMENT_TYPES),
            "isolation_levels": [level.value for level in IsolationType],
            "default_isolation": engine.settings.default_isolation.value,
            "cgroup_driver": cgroup["driver"],
            "cgroup_layout": cgroup["layout"],
            "docs": "/docs",
        }

    @app.get(API + "/info", tags=["system"])
    async def info(request: Request) -> dict[str, Any]:
        """The host and the engine's set-up, as ``codex32 doctor --json`` prints it."""
        engine = context_of(request).engine
        report: dict[str, Any] = await engine.call(engine.sync.info)
        return report

    @app.get("/health", tags=["system"])
    async def health(request: Request) -> JSONResponse:
        """200 when the engine answers (a full listing within 5 s), with counts by state."""
        engine = context_of(request).engine
        try:
            found = await asyncio.wait_for(engine.containers.list(all=True), timeout=5)
        except Exception as exc:
            return JSONResponse(
                {
                    "status": "unhealthy",
                    "container_engine": "custom",
                    "message": f"the engine does not answer: {type(exc).__name__}: {exc}",
                },
                status_code=503,
            )
        counts = Counter(c.status for c in found)
        return JSONResponse(
            {
                "status": "healthy",
                "container_engine": "custom",
                "version": _version(),
                "storage_dir": str(engine.settings.storage_dir),
                "containers": {"total": len(found), **dict(sorted(counts.items()))},
            }
        )

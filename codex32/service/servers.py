"""The servers ``codex32 serve`` runs beside the native API, in the same process and loop.

The native app's lifespan makes one :class:`ServiceContext` (the warm engine's async
face, the policy, the settings, the audit log), then calls every starter with it.
A starter is ``async def start_server(context) -> RunningServer | None`` (None: it
chose not to run, e.g. no socket configured); what it returns is stopped, in reverse
order, when the service shuts down, before ``shutdown_engine()``.

Starters come from :data:`SERVER_MODULES` (each module's ``start_server``; a module
that is not installed is skipped) and from :func:`register_server` (tests, plug-ins).
The Docker-compatible socket is ``codex32.service.docker``'s ``start_server``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from codex32 import AsyncContainerEngine
from codex32.service.audit import AuditLog
from codex32.service.policy import Policy
from codex32.service.settings import ServiceSettings

log = logging.getLogger("codex32.service")


@dataclass
class ServiceContext:
    """What every server of the process shares."""

    engine: AsyncContainerEngine
    policy: Policy
    settings: ServiceSettings
    audit: AuditLog


class RunningServer(Protocol):
    """A started server; ``stop`` closes its sockets and ends its connections."""

    async def stop(self) -> None: ...


ServerStarter = Callable[[ServiceContext], Awaitable[RunningServer | None]]

#: Modules whose ``start_server(context)`` is started with the service.
SERVER_MODULES: list[str] = ["codex32.service.docker"]

_registered: list[ServerStarter] = []


def register_server(starter: ServerStarter) -> None:
    """Start ``starter`` with the service too (call before the service starts)."""
    _registered.append(starter)


def starters() -> list[ServerStarter]:
    """The extra servers' starters, modules first."""
    found: list[ServerStarter] = []
    for name in SERVER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                log.debug("server module %s is not installed", name)
                continue
            raise
        starter = getattr(module, "start_server", None)
        if starter is not None:
            found.append(starter)
    return found + list(_registered)


async def start_all(context: ServiceContext, extra: list[ServerStarter]) -> list[RunningServer]:
    """Start ``extra`` and every registered starter; on a failure stop those started."""
    running: list[RunningServer] = []
    try:
        for starter in [*extra, *starters()]:
            server = await starter(context)
            if server is not None:
                running.append(server)
    except BaseException:
        await stop_all(running)
        raise
    return running


async def stop_all(running: list[RunningServer]) -> None:
    """Stop in reverse order; one failing does not keep the others running."""
    for server in reversed(running):
        try:
            await server.stop()
        except Exception:
            log.exception("stopping %r failed", server)

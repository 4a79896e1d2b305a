"""ContainerEngine and Container: the one place where the layers are wired together.

Config (validated) -> profile -> template -> plan -> launch. Everything that can be
refused is refused before anything is created; anything created on the way is
removed again if a later step fails.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codex32._cgroups.containers import ContainerCgroups
from codex32._engine import (
    create,
    recovery,
)
from codex32._engine.collections import ContainerCollection
from codex32._engine.images import ImageCollection
from codex32._engine.pool import SandboxPool
from codex32._images.templates import TemplateStore
from codex32._network.manager import NetworkCollection, Networking
from codex32._plan.plan import Plan, shape_plan
from codex32._plan.profiles import Profile, resolve_profile
from codex32._runtime.launch import ForkServer, take_prestarted_fork_server
from codex32._store.events import (
    Event,
    EventHooks,
    EventWatcher,
    append_event,
    follow_events,
    read_events,
)
from codex32._store.state import StateStore
from codex32.config.container import ContainerConfig
from codex32.settings import Settings, check_pool_size, pool_size_from_env


class ContainerEngine:
    """The engine: containers and images under one storage directory."""

    def __init__(
        self,
        storage_dir: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        *,
        fork_server: bool = True,
        sandbox_pool: int | None = None,
    ) -> None:
        """``fork_server``: start containers' monitors from a warm launcher process
        (started on first use, or adopted from ``prestart_fork_server``, as the CLI
        does); off, each monitor is a fresh interpreter. ``sandbox_pool``: sandboxes
        kept ready per shape (``CODEX32_SANDBOX_POOL`` if None, else none; needs the
        fork server; 0: none)."""
        self.settings = settings or Settings.from_env(storage_dir)
        self._fork_server = (take_prestarted_fork_server() or ForkServer()) if fork_server else None
        self._store = StateStore(self.settings.storage_dir, group=self.settings.userns_uid_base)
        self._templates = TemplateStore(self.settings.templates_dir, self.settings.storage_dir)
        self._cgroups = ContainerCgroups(self.settings.cgroup_parent)
        if sandbox_pool is None:
            size = pool_size_from_env()
        else:
            size = check_pool_size(sandbox_pool, "sandbox_pool")
        self._pool = SandboxPool(size, self._fork_server, self._cgroups)
        self._networking = Networking(self.settings.storage_dir, self._store)
        self.containers = ContainerCollection(self)
        self.images = ImageCollection(self)
        self.networks = NetworkCollection(self._networking)
        self._hooks: EventHooks | None = None
        self._watcher: EventWatcher | None = None
        self._watch_lock = threading.Lock()

    # -- events ----------------------------------------------------------------

    @property
    def _events_path(self) -> Path:
        return self.settings.storage_dir / "events.jsonl"

    def on(self, action: str, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for every ``action`` event ("die", "start", "*", ...).

        Events written by any process count (the monitor records a container's
        death), so a thread follows the events file from the first ``on`` until
        ``close()``; callbacks run in that thread.
        """
        with self._watch_lock:
            if self._hooks is None:
                self._hooks = EventHooks()
            self._hooks.on(action, callback)
            if self._watcher is None:
                self._store.ensure_layout()
                self._watcher = EventWatcher(self._events_path, self._hooks)
                self._watcher.start()

    def off(self, action: str, callback: Callable[[Event], None]) -> None:
        """Stop calling ``callback`` for ``action``."""
        if self._hooks is not None:
            self._hooks.off(action, callback)

    def publish(self, event: Event) -> None:
        """Append an event of another kind (a bot's) to the engine's events file, so that
        ``events`` followers (the CLI, the service) see it beside the containers'."""
        self._store.ensure_layout()
        append_event(self._events_path, event)

    def events(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        filters: dict[str, list[str]] | None = None,
        follow: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[Event]:
        """Past events (and with ``follow``, new ones as they come), as Docker's filters.

        ``stop()`` (asked once per poll) ends a followed stream: a caller gone."""
        if follow:
            return follow_events(self._events_path, since=since, filters=filters,
                                 stop=stop or (lambda: False))  # fmt: skip
        return read_events(self._events_path, since=since, until=until, filters=filters)

    def __enter__(self) -> ContainerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the event-hook thread and the launcher, if any. Containers keep running."""
        with self._watch_lock:
            if self._watcher is not None:
                self._watcher.stop()
                self._watcher = None
        self._pool.close()
        if self._fork_server is not None:
            self._fork_server.close()

    def info(self) -> dict[str, Any]:
        """What this host offers and how the engine is set up (``codex32 doctor``,
        ``docker info``): cgroup layout, driver and controllers, storage, defaults."""
        import dataclasses

        report = self._cgroups.report()
        return {
            "cgroup": {
                **dataclasses.asdict(report.host),
                "description": report.host.describe(),
                "usable_controllers": report.usable_controllers,
                "limits": [
                    {"limit": name, "enforceable": ok, "reason": why}
                    for name, ok, why in report.limits
                ],
                "unavailable": report.unavailable,
                "parent": report.parent,
            },
            "storage_dir": str(self.settings.storage_dir),
            "templates_dir": str(self.settings.templates_dir),
            "default_isolation": self.settings.default_isolation.value,
            "sandbox_pool": self._pool.describe(),
        }

    # -- compile -------------------------------------------------------------

    def profile(self, config: ContainerConfig) -> Profile:
        """The isolation profile a config resolves to."""
        return resolve_profile(
            config,
            userns_uid_base=self.settings.userns_uid_base,
            userns_size=self.settings.userns_size,
        )

    def warm_pool(self, config: ContainerConfig, *, wait: float = 0) -> bool:
        """Have the sandbox pool keep sandboxes for containers like ``config`` (its
        isolation level and network mode) ready from now on, not only after the first
        start of that kind; ``wait`` seconds at most for them. False if the pool is off
        or they were not ready in time."""
        if self._pool.size <= 0:
            return False
        self._pool.want(shape_plan("", self.profile(config)))
        return self._pool.wait_ready(wait)

    def plan(self, config: ContainerConfig, container_id: str = "0" * 64) -> Plan:
        """The set-up plan for ``config`` (nothing is created; templates may be built)."""
        config = create.script_image(config)
        profile = self.profile(config)
        source = self.images.root_for(config, None)
        return create.compile_plan(self, container_id, config, profile, source)

    # -- create --------------------------------------------------------------

    # -- lifecycle -------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """After a crash or reboot: mark dead containers exited, drop half-made ones."""
        return recovery.reconcile(self)[0]

    def recover(self) -> list[str]:
        """``reconcile``, then bring back what a reboot or crash took down, as dockerd
        does when it starts (``init_engine`` runs this).

        A container whose processes died unseen (no monitor wrote its exit) is started
        again if its restart policy asks for it (``always``, ``unless-stopped``, and
        ``on-failure[:N]`` with retries left) and a stop by the user was not under way;
        an ``--rm`` one is removed. Returns the ids ``reconcile`` fixed.
        """
        fixed, lost = recovery.reconcile(self)
        for container_id in lost:
            recovery.recover_lost(self, container_id)
        return fixed


_engine: ContainerEngine | None = None


def get_engine() -> ContainerEngine:
    """The process-wide engine (created from the environment on first use)."""
    global _engine  # noqa: PLW0603 - the original design's module-level singleton
    if _engine is None:
        _engine = ContainerEngine()
    return _engine


async def init_engine(
    storage_dir: str | os.PathLike[str] | None = None, *, sandbox_pool: int | None = None
) -> ContainerEngine:
    """Create the process-wide engine (awaitable, as the FastAPI start-up uses it).

    ``sandbox_pool``: sandboxes kept ready per shape (None: ``CODEX32_SANDBOX_POOL``,
    else none); a long-lived process is where a pool pays."""
    import asyncio  # only the service's start-up needs it (~25 ms for every CLI call)

    global _engine  # noqa: PLW0603
    _engine = ContainerEngine(storage_dir, sandbox_pool=sandbox_pool)
    # reconcile uses pyroute2, which runs an event loop of its own: not on this one.
    await asyncio.to_thread(_engine.recover)
    return _engine


async def shutdown_engine() -> None:
    """Close and forget the process-wide engine (containers keep running)."""
    global _engine  # noqa: PLW0603
    if _engine is not None:
        _engine.close()
    _engine = None

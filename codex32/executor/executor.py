"""AdaptiveExecutor: run bots where their ``DeploymentType`` says, keep them running.

The database is the truth: bots (what should run) and runs (what ran, where, how it
ended). Every verb records first and acts second (a run is written ``starting``
before its process or container exists), so a crash between the two leaves a run
that reconciling finds and settles, never a bot running unrecorded.

One executor per storage directory and database supervises (it holds the lock
``db.supervisor_lock`` names; one that finds it taken tries again every 2 s): it
follows the engine's events (container runs, exits), watches processes and pods,
probes health, and restarts what the policy says, with Docker's back-off. Others (a
CLI) only act and read; their reads refresh live runs against what really runs.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import inspect
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codex32 import ConfigError, ContainerError, ContainerNotFoundError, StateError
from codex32.executor.backends import Backend, Observed, bot_dir
from codex32.executor.backends.container import ContainerBackend, container_name
from codex32.executor.backends.local import LocalProcessBackend
from codex32.executor.backoff import restart_delay, should_restart
from codex32.executor.db import BotStore, supervisor_lock
from codex32.executor.health import HealthTracker
from codex32.executor.models import Bot, BotRun, BotStatus, DeploymentType, HealthState, RunState

if TYPE_CHECKING:
    from codex32 import ContainerEngine
    from codex32.executor._events import EngineEvent

log = logging.getLogger("codex32.executor")

HOOK_EVENTS = frozenset(
    {
        "bot_deployed",
        "bot_started",
        "bot_exited",
        "bot_stopped",
        "bot_lost",
        "bot_restarting",
        "bot_unhealthy",
        "bot_healthy",
        "health_status",
        "bot_oom",
        "bot_removed",
        "bot_failed",
        "*",
    }
)

#: How long a run may stay ``starting`` (its process or container being made) before a
#: refresh judges it: one left so by an executor killed mid-start is then found lost.
STARTING_GRACE = 60.0
#: The same for a process: its keeper writes the pid down within milliseconds.
LOCAL_STARTING_GRACE = 10.0

Callback = Callable[["BotEvent"], Awaitable[None] | None]


@dataclass(frozen=True)
class BotEvent:
    """What a hook receives: ``action`` happened to ``bot_name`` (run ``run_number``)."""

    action: str
    bot_id: str
    bot_name: str
    run_number: int | None = None
    time: float = field(default_factory=time.time)
    attributes: dict[str, str] = field(default_factory=dict)


def default_storage_dir() -> Path:
    """The engine's storage directory: ``CODEX32_STORAGE_DIR`` (or the original name)."""
    return Path(
        os.environ.get("CODEX32_STORAGE_DIR")
        or os.environ.get("CONTAINER_STORAGE_DIR")
        or "/var/lib/codex32"
    ).absolute()


class BotNotFoundError(ContainerNotFoundError):
    """No bot has this id or name (a not-found error, as a container's: HTTP 404)."""


class AdaptiveExecutor:
    """Run bots as processes, containers or pods; remember them; keep them healthy.

    Use it as ``async with AdaptiveExecutor() as executor:``, or call ``start()`` and
    ``close()``. ``supervise=False`` makes a passive executor (the CLI's): it acts and
    reads, and leaves watching and restarting to the supervising one.
    """

    def __init__(
        self,
        storage_dir: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        engine: ContainerEngine | None = None,
        supervise: bool = True,
        tick: float = 0.2,
    ) -> None:
        self.storage_dir = Path(storage_dir).absolute() if storage_dir else default_storage_dir()
        self.database_url = database_url
        self._engine = engine
        self._own_engine = False
        self._want_supervise = supervise
        self._tick = tick
        self._store: BotStore | None = None
        self._hooks: dict[str, list[Callback]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._health: dict[int, HealthTracker] = {}  # run id -> tracker
        self._next_trigger: dict[str, str] = {}  # bot id -> why the engine starts it next
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_fd: int | None = None
        self._events: asyncio.Queue[EngineEvent] | None = None
        self._watching = False
        self._backends: dict[DeploymentType, Backend] = {}
        self._local = LocalProcessBackend(self.storage_dir)
        self._backends[DeploymentType.LOCAL_PROCESS] = self._local
        self._backends[DeploymentType.CUSTOM_CONTAINER] = ContainerBackend(
            self.storage_dir, self.engine
        )

    # -- life ------------------------------------------------------------------

    @property
    def supervising(self) -> bool:
        """Whether this executor holds the supervisor lock of its storage and database."""
        return self._lock_fd is not None

    @property
    def store(self) -> BotStore:
        if self._store is None:
            raise ContainerError("the executor is not started: use 'async with' or start()")
        return self._store

    def engine(self) -> ContainerEngine:
        """The container engine (made on first use, on the executor's storage)."""
        if self._engine is None:
            from codex32 import ContainerEngine

            self._engine = ContainerEngine(self.storage_dir)
            self._own_engine = True
        return self._engine

    def backend(self, deployment_type: DeploymentType) -> Backend:
        if deployment_type not in self._backends:
            from codex32.executor.backends.kubernetes import KubernetesBackend

            self._backends[deployment_type] = KubernetesBackend()
        return self._backends[deployment_type]

    async def start(self) -> AdaptiveExecutor:
        """Open the database; when supervising, reconcile and start watching."""
        (self.storage_dir / "executor").mkdir(parents=True, exist_ok=True)
        self._store = await BotStore.open(self.storage_dir, self.database_url)
        if self._want_supervise:
            if self._take_lock():
                await self._begin_supervision()
            else:
                self._tasks.append(asyncio.create_task(self._wait_for_lock()))
        return self

    async def _begin_supervision(self) -> None:
        await self.reconcile()
        self._tasks.append(asyncio.create_task(self._supervise(), name="bot-supervisor"))

    async def _wait_for_lock(self) -> None:
        """Take over supervision when the executor holding it ends (a detached one)."""
        while not self._take_lock():
            await asyncio.sleep(2.0)
        await self._begin_supervision()

    async def close(self) -> None:
        """Stop watching (bots keep running) and close the database."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._engine is not None and self._watching:
            self._engine.off("*", self._engine_event)
            self._watching = False
        if self._own_engine and self._engine is not None:
            self._engine.close()
            self._engine, self._own_engine = None, False
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def __aenter__(self) -> AdaptiveExecutor:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _take_lock(self) -> bool:
        path = supervisor_lock(self.storage_dir, self.database_url)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    # -- hooks -----------------------------------------------------------------

    def on(self, action: str, callback: Callback) -> None:
        """Call ``callback(event)`` on ``action`` (``bot_started``, ``bot_exited``, ``*``...).

        Callbacks may be coroutines; they run in the executor's event loop. Container
        bots' events come from the engine's, so they are seen whoever started the bot.
        """
        if action not in HOOK_EVENTS:
            raise ConfigError(
                f"unknown bot event {action!r}", hint=f"use one of {', '.join(sorted(HOOK_EVENTS))}"
            )
        self._hooks.setdefault(action, []).append(callback)

    def off(self, action: str, callback: Callback) -> None:
        with contextlib.suppress(ValueError):
            self._hooks.get(action, []).remove(callback)

    async def _emit(
        self, action: str, bot: Bot, run: BotRun | None = None, **attributes: str
    ) -> None:
        event = BotEvent(
            action, bot.id, bot.name, run.number if run else None, attributes=attributes
        )
        self._record_event(event)
        for callback in [*self._hooks.get(action, []), *self._hooks.get("*", [])]:
            try:
                result = callback(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("bot hook %s for %s failed", action, bot.name)

    def _record_event(self, event: BotEvent) -> None:
        """Append the event to the engine's events file as type ``bot``: the service's
        events stream and ``codex32 events --filter type=bot`` show it, whoever made it."""
        from codex32 import Event

        attributes = dict(event.attributes)
        if event.run_number is not None:
            attributes["run"] = str(event.run_number)
        line = Event(event.time, "bot", event.action, event.bot_id, event.bot_name, attributes)
        try:
            self.engine().publish(line)
        except OSError as error:  # a full disk: the hooks and the database still know
            log.warning("cannot record the bot event %s: %s", event.action, error)

    # -- verbs -----------------------------------------------------------------

    def _lock(self, bot_id: str) -> asyncio.Lock:
        return self._locks.setdefault(bot_id, asyncio.Lock())

    async def get_bot(self, bot_id: str) -> Bot:
        """The bot with this id, name or unique id prefix."""
        found = await self.store.get_bot(bot_id)
        if found is None:
            raise BotNotFoundError(f"no bot {bot_id!r}", hint="'codex32 bot ls' lists them")
        return found[0]

    async def run_bot(self, bot: Bot) -> BotRun:
        """Deploy ``bot`` on the backend its ``deployment_type`` names; return its run.

        A bot already running with the same definition is left as it is; one whose
        definition changed (a new ``deployment_type``, say) is stopped and started
        again, on its new backend, keeping its history.
        """
        bot.check_code()
        known = await self.store.get_bot(bot.name)
        if known is not None and known[0].id != bot.id:
            raise ConfigError(
                f"a bot named {bot.name!r} exists already (id {known[0].id})",
                hint="remove it first, or deploy it by its id",
            )
        async with self._lock(bot.id):
            latest = await self.store.latest_run(bot.id)
            if latest and latest.live:
                await self._refresh(known[0] if known else bot, latest)
                latest = await self.store.latest_run(bot.id)
            if latest and latest.live:
                if known is not None and known[0] == bot:
                    await self.store.set_desired(bot.id, "running")
                    return latest
                # Desired "stopped" first: a supervisor elsewhere that sees the old run end
                # records it stopped and does not restart it on its old backend.
                await self.store.set_desired(bot.id, "stopped")
                await self._stop_run(known[0] if known else bot, latest)
            await self.store.save_bot(bot, desired="running")
            if known is None:
                await self._emit("bot_deployed", bot)
            return await self._start_run(bot, trigger="user")

    async def _start_run(self, bot: Bot, trigger: str) -> BotRun:
        """Record a run, then start it; a start that fails leaves a ``failed`` run."""
        kind = bot.deployment_config.deployment_type
        run = await self.store.add_run(
            BotRun(bot_id=bot.id, number=1, deployment_type=kind, trigger=trigger)
        )
        assert run.id is not None
        try:
            started = await self.backend(kind).start(bot, run)
        except BaseException as error:
            await self.store.update_run(
                run.id,
                state=RunState.FAILED,
                finished_at=time.time(),
                reason=str(error) or type(error).__name__,
            )
            await self._emit("bot_failed", bot, run, error=str(error))
            raise
        values = {k: v for k, v in vars(started).items() if v is not None}
        health = HealthState.STARTING if self._probed(bot) else HealthState.NONE
        # Conditional: a refresh elsewhere may have seen it end already (a quick crash).
        if not await self.store.update_run(
            run.id, only_live=True, state=RunState.RUNNING, health=health, **values
        ):
            recorded = [r for r in await self.store.runs(bot.id, limit=5) if r.id == run.id]
            if recorded:  # what that refresh recorded (its exit code), not "running"
                await self._emit("bot_started", bot, recorded[0], trigger=trigger)
                return recorded[0]
        run = run.model_copy(update={**values, "state": RunState.RUNNING, "health": health})
        check = bot.deployment_config.health_check
        if self._probed(bot) and check is not None and run.id is not None:
            self._health[run.id] = HealthTracker(check)
        await self._emit("bot_started", bot, run, trigger=trigger)
        return run

    @staticmethod
    def _probed(bot: Bot) -> bool:
        config = bot.deployment_config
        return (
            config.health_check is not None
            and config.deployment_type is not DeploymentType.KUBERNETES_POD
        )

    async def stop_bot(self, bot_id: str, timeout: float | None = None) -> BotRun | None:
        """Stop the bot (SIGTERM, then SIGKILL after ``timeout``); it stays stopped."""
        bot = await self.get_bot(bot_id)
        await self.store.set_desired(bot.id, "stopped")
        async with self._lock(bot.id):
            latest = await self.store.latest_run(bot.id)
            if latest is None or not latest.live:
                return latest
            return await self._stop_run(bot, latest, timeout)

    async def _stop_run(self, bot: Bot, run: BotRun, timeout: float | None = None) -> BotRun:
        assert run.id is not None
        wait = bot.deployment_config.stop_timeout if timeout is None else timeout
        backend = self.backend(run.deployment_type)
        await backend.stop(bot, run, wait)
        seen = await backend.status(bot, run)
        self._health.pop(run.id, None)
        changed = await self.store.update_run(
            run.id,
            only_live=True,
            state=RunState.STOPPED,
            exit_code=seen.exit_code,
            finished_at=seen.finished_at or time.time(),
            reason="stopped by the user",
        )
        if changed:
            await self._emit("bot_stopped", bot, run, exitCode=str(seen.exit_code))
        return (await self.store.runs(bot.id, limit=1))[0]

    async def restart_bot(self, bot_id: str, timeout: float | None = None) -> BotRun:
        """Stop the bot's run (if any) and start a new one."""
        bot = await self.get_bot(bot_id)
        async with self._lock(bot.id):
            latest = await self.store.latest_run(bot.id)
            if latest and latest.live:
                await self.store.set_desired(bot.id, "stopped")  # as in run_bot
                await self._stop_run(bot, latest, timeout)
            await self.store.set_desired(bot.id, "running")
            return await self._start_run(bot, trigger="user")

    async def remove_bot(self, bot_id: str, *, force: bool = False) -> None:
        """Forget the bot and its runs (``force`` stops it first; else it must be stopped)."""
        bot = await self.get_bot(bot_id)
        latest = await self.store.latest_run(bot.id)
        if latest and latest.live:
            await self._refresh(bot, latest)
            latest = await self.store.latest_run(bot.id)
        if latest and latest.live:
            if not force:
                raise StateError(
                    f"bot {bot.name} is running", hint="stop it first, or remove it with --force"
                )
            await self.stop_bot(bot.id, timeout=0 if force else None)
        runs = await self.store.runs(bot.id)
        # Where it ran (a run that never started made nothing: a pod bot whose cluster was
        # never reached has nothing to delete), and the container of a move under way.
        kinds = {r.deployment_type for r in runs if r.state is not RunState.FAILED}
        if bot.deployment_config.deployment_type is DeploymentType.CUSTOM_CONTAINER:
            kinds.add(DeploymentType.CUSTOM_CONTAINER)
        for kind in kinds:
            with contextlib.suppress(ContainerNotFoundError):
                await self.backend(kind).remove(bot)
        await asyncio.to_thread(shutil.rmtree, bot_dir(self.storage_dir, bot), True)
        await self.store.delete_bot(bot.id)
        await self._emit("bot_removed", bot)

    async def status(self, bot_id: str) -> BotStatus:
        """The bot, whether it should run, and its latest run (refreshed against reality)."""
        found = await self.store.get_bot(bot_id)
        if found is None:
            raise BotNotFoundError(f"no bot {bot_id!r}", hint="'codex32 bot ls' lists them")
        bot, desired = found
        runs = await self.store.runs(bot.id, limit=50)
        if runs and runs[0].live:
            async with self._lock(bot.id):
                runs = await self.store.runs(bot.id, limit=50)
                if runs and runs[0].live:
                    await self._refresh(bot, runs[0])
                    runs = await self.store.runs(bot.id, limit=50)
        restarts = sum(1 for r in runs if r.trigger != "user")
        return BotStatus(
            bot=bot,
            desired="running" if desired == "running" else "stopped",
            run=runs[0] if runs else None,
            restarts=restarts,
        )

    async def list(self) -> builtins.list[BotStatus]:
        """Every bot's status."""
        return [await self.status(bot.id) for bot, _desired in await self.store.list_bots()]

    async def runs(self, bot_id: str) -> builtins.list[BotRun]:
        """The bot's runs, newest first."""
        return await self.store.runs((await self.get_bot(bot_id)).id)

    async def logs(
        self, bot_id: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The bot's output (of its current backend); ``follow`` until its run ends."""
        bot = await self.get_bot(bot_id)
        run = await self.store.latest_run(bot.id)
        kind = run.deployment_type if run else bot.deployment_config.deployment_type
        backend = self.backend(kind)
        alive = [run is not None and run.live]

        def live() -> bool:
            return alive[0]

        async def watch() -> None:
            while alive[0] and run is not None:
                await asyncio.sleep(0.3)
                seen = await backend.status(bot, run)
                alive[0] = seen.running or seen.restarting

        watcher = asyncio.create_task(watch()) if follow else None
        try:
            async for line in backend.logs(bot, run, follow=follow, tail=tail, live=live):
                yield line
        finally:
            if watcher:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    # -- refreshing and reconciling -------------------------------------------

    async def _refresh(self, bot: Bot, run: BotRun) -> Observed | None:
        """Settle a live run that has ended (exit code, or lost); return what was seen."""
        assert run.id is not None
        age = time.time() - run.started_at
        local = run.deployment_type is DeploymentType.LOCAL_PROCESS
        if run.state is RunState.STARTING and not local and age < STARTING_GRACE:
            return None  # a start under way (here or in another process): not judged yet
        try:
            seen = await self.backend(run.deployment_type).status(bot, run)
        except ContainerError as error:
            log.warning("cannot look at bot %s: %s", bot.name, error)
            return None
        if run.state is RunState.STARTING and local:
            # A process's keeper writes its pid down at once: a start whose starter died
            # (or is still at it) is judged from that, after a few seconds for the keeper.
            if seen.running and seen.pid is not None:
                await self.store.update_run(
                    run.id,
                    only_live=True,
                    state=RunState.RUNNING,
                    pid=seen.pid,
                    pid_start_time=seen.pid_start_time,
                )
                return seen
            if seen.lost and age < LOCAL_STARTING_GRACE:
                return None
        if seen.running:
            return seen
        if seen.restarting and run.state is not RunState.RUNNING:
            return seen
        state = RunState.LOST if seen.lost else RunState.EXITED
        if state is RunState.EXITED and await self._stopping(bot):
            state = RunState.STOPPED
        changed = await self.store.update_run(
            run.id,
            only_live=True,
            state=state,
            exit_code=seen.exit_code,
            finished_at=seen.finished_at or time.time(),
            reason="stopped by the user" if state is RunState.STOPPED else seen.reason,
        )
        self._health.pop(run.id, None)
        if changed:
            action = {RunState.LOST: "bot_lost", RunState.STOPPED: "bot_stopped"}.get(
                state, "bot_exited"
            )
            await self._emit(action, bot, run, exitCode=str(seen.exit_code))
        return seen

    async def _stopping(self, bot: Bot) -> bool:
        """Whether a run of ``bot`` that ends now was stopped: ``stop_bot`` marks the bot
        stopped before it signals (in this process or another one)."""
        found = await self.store.get_bot(bot.id)
        return found is not None and found[1] == "stopped"

    async def reconcile(self) -> builtins.list[str]:
        """Compare the database with what really runs: settle ended runs, record runs the
        engine made while nobody watched. Restarts are the supervisor's next round."""
        notes = []
        for bot, _desired in await self.store.list_bots():
            async with self._lock(bot.id):
                latest = await self.store.latest_run(bot.id)
                if latest is None:
                    continue
                if latest.deployment_type is DeploymentType.CUSTOM_CONTAINER:
                    await self._replay_container_events(bot, latest)
                    latest = await self.store.latest_run(bot.id) or latest
                if latest.live:
                    seen = await self._refresh(bot, latest)
                    if seen is not None and not seen.running:
                        notes.append(
                            f"{bot.name}: run {latest.number} {'lost' if seen.lost else 'ended'}"
                        )
                    elif seen is not None and self._probed(bot) and latest.id is not None:
                        self._health[latest.id] = HealthTracker(bot.deployment_config.health_check)  # type: ignore[arg-type]
        return notes

    async def _replay_container_events(self, bot: Bot, latest: BotRun) -> None:
        engine = self.engine()
        since = (latest.finished_at or latest.started_at) - 1
        try:
            events = await asyncio.to_thread(
                lambda: list(
                    engine.events(since=since, filters={"container": [container_name(bot)]})
                )
            )
        except ContainerError:
            return
        for event in events:
            await self._apply_container_event(bot, event)

    # -- container events ------------------------------------------------------

    def _engine_event(self, event: Any) -> None:  # in the engine's watcher thread
        if self._events is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, event)

    async def _consume_engine_events(self) -> None:
        assert self._events is not None
        while True:
            event = await self._events.get()
            if event.type != "container" or not event.name.startswith("bot-"):
                continue  # the executor's own bot events come back this way too
            found = await self.store.get_bot(event.name.removeprefix("bot-"))
            if (
                found is None
                or found[0].deployment_config.deployment_type is not DeploymentType.CUSTOM_CONTAINER
            ):
                continue
            async with self._lock(found[0].id):
                await self._apply_container_event(found[0], event)

    async def _apply_container_event(self, bot: Bot, event: EngineEvent) -> None:
        """A container's ``start`` is a run, its ``die`` the end of one (idempotent)."""
        latest = await self.store.latest_run(bot.id)
        if event.type != "container" or latest is None:
            return
        if latest.deployment_type is not DeploymentType.CUSTOM_CONTAINER:
            return
        if event.id and latest.container_id and event.id != latest.container_id:
            return
        assert latest.id is not None
        if event.action == "die":
            if latest.live and latest.started_at <= event.time + 1:
                code = int(event.attributes.get("exitCode", "255"))
                stopping = await self._stopping(bot)
                ended: dict[str, Any] = {"state": RunState.EXITED}
                if stopping:
                    ended = {"state": RunState.STOPPED, "reason": "stopped by the user"}
                if await self.store.update_run(
                    latest.id, only_live=True, exit_code=code, finished_at=event.time, **ended
                ):
                    self._health.pop(latest.id, None)
                    action = "bot_stopped" if stopping else "bot_exited"
                    await self._emit(action, bot, latest, exitCode=str(code))
        elif event.action == "start":
            if latest.live and (
                latest.state is RunState.STARTING or event.time - latest.started_at < 2
            ):
                return  # the start of the run already recorded
            if (
                not latest.live
                and latest.finished_at is not None
                and event.time >= latest.finished_at - 0.01
            ):
                run = await self.store.add_run(
                    BotRun(
                        bot_id=bot.id,
                        number=1,
                        deployment_type=latest.deployment_type,
                        state=RunState.RUNNING,
                        started_at=event.time,
                        container_id=event.id or latest.container_id,
                        trigger=(trigger := self._next_trigger.pop(bot.id, "policy")),
                        health=HealthState.STARTING if self._probed(bot) else HealthState.NONE,
                    )
                )
                if self._probed(bot) and run.id is not None:
                    self._health[run.id] = HealthTracker(bot.deployment_config.health_check)  # type: ignore[arg-type]
                await self._emit("bot_started", bot, run, trigger=trigger)
        elif event.action == "oom":
            await self._emit("bot_oom", bot, latest)

    # -- supervision -----------------------------------------------------------

    _loop: asyncio.AbstractEventLoop | None = None

    async def _supervise(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        consumer = asyncio.create_task(self._consume_engine_events())
        try:
            while True:
                try:
                    await self._supervise_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("bot supervision round failed")
                await asyncio.sleep(self._tick)
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    def _watch_engine(self) -> None:
        if not self._watching:
            self.engine().on("*", self._engine_event)
            self._watching = True

    async def _supervise_once(self) -> None:
        for bot, desired in await self.store.list_bots():
            if desired != "running":
                continue
            if bot.deployment_config.deployment_type is DeploymentType.CUSTOM_CONTAINER:
                self._watch_engine()
            async with self._lock(bot.id):
                await self._supervise_bot(bot)

    async def _supervise_bot(self, bot: Bot) -> None:
        runs = await self.store.runs(bot.id, limit=100)
        if not runs:
            return
        latest = runs[0]
        if latest.live:
            seen = await self._refresh(bot, latest)
            if seen is None or seen.running:
                await self._check_health(bot, latest)
                return
            runs = await self.store.runs(bot.id, limit=100)
            latest = runs[0]
        if latest.state is RunState.STOPPED:
            return
        if (
            latest.deployment_type is DeploymentType.CUSTOM_CONTAINER
            and latest.state is not RunState.LOST
        ):
            # The engine's monitor owns a container's restarts (even with no executor).
            seen = await self.backend(latest.deployment_type).status(bot, latest)
            if seen.running and not latest.live:  # started again, its event not seen yet
                await self._apply_container_event(bot, _start_event(bot, seen))
            if seen.running or seen.restarting:
                return
            if not seen.lost:
                await self.store.set_desired(bot.id, "stopped")
                return
        if latest.deployment_type is not bot.deployment_config.deployment_type:
            return  # moved to another backend by a deploy under way elsewhere
        if not should_restart(bot.deployment_config.restart_policy, runs):
            await self.store.set_desired(bot.id, "stopped")
            return
        due = (latest.finished_at or time.time()) + restart_delay(runs)
        if time.time() < due:
            return
        await self._emit("bot_restarting", bot, latest, exitCode=str(latest.exit_code))
        trigger = "recover" if latest.state is RunState.LOST else "policy"
        try:
            await self._start_run(bot, trigger=trigger)
        except Exception as error:
            log.warning("restarting bot %s failed: %s", bot.name, error)

    async def _check_health(self, bot: Bot, run: BotRun) -> None:
        assert run.id is not None
        tracker = self._health.get(run.id)
        check = bot.deployment_config.health_check
        if check is None or not self._probed(bot):
            return
        if tracker is None:
            tracker = self._health[run.id] = HealthTracker(check)
        now = time.monotonic()
        if not tracker.due(now):
            return
        tracker.probing = True
        try:
            result = await self.backend(run.deployment_type).probe(bot, run, check)
        finally:
            tracker.probing = False
        changed = tracker.record(result, time.monotonic())
        if changed is None:
            return
        await self.store.update_run(run.id, health=changed)
        await self._emit(
            "health_status", bot, run, status=changed.value, output=result.output[-512:]
        )
        if changed is HealthState.HEALTHY:
            await self._emit("bot_healthy", bot, run)
            return
        if changed is not HealthState.UNHEALTHY:
            return
        await self._emit("bot_unhealthy", bot, run, output=result.output[-512:])
        if not check.restart_on_unhealthy or bot.deployment_config.restart_policy.name == "no":
            return
        self._health.pop(run.id, None)
        backend = self.backend(run.deployment_type)
        if isinstance(backend, ContainerBackend):
            self._next_trigger[bot.id] = "unhealthy"
            await self.store.update_run(run.id, reason="unhealthy")
            await backend.restart(bot, bot.deployment_config.stop_timeout)
            return
        await backend.stop(bot, run, bot.deployment_config.stop_timeout)
        seen = await backend.status(bot, run)
        await self.store.update_run(
            run.id,
            only_live=True,
            state=RunState.EXITED,
            exit_code=seen.exit_code,
            reason="unhealthy",
            finished_at=seen.finished_at or time.time(),
        )
        await self._emit("bot_exited", bot, run, exitCode=str(seen.exit_code), reason="unhealthy")
        await self._start_run(bot, trigger="unhealthy")


def _start_event(bot: Bot, seen: Observed) -> EngineEvent:
    from codex32.executor._events import Event

    return Event(
        time=time.time(), type="container", action="start", id="", name=container_name(bot)
    )

"""CUSTOM_CONTAINER: a bot in a codex32 container (the engine's public API).

The bot's code is bound read-only at ``/bot`` into the template (``python`` by
default), its state directory writable at ``/state``; isolation, limits, restart
policy and stop timeout come from its ``DeploymentConfig``. The engine's monitor
restarts it (Docker's back-off) even while no executor runs; the executor learns of
each run from the engine's events.

HTTP and TCP probes run inside the container (``python3`` in its network namespace),
so they reach the bot whatever its network: a STRICT bot has none to reach it by.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from codex32 import (
    ContainerConfig,
    ContainerError,
    ContainerNotFoundError,
    ContainerState,
    IsolationType,
    Volume,
)
from codex32.executor.backends import Observed, ProbeResult, Started, bot_dir, resolve_secrets
from codex32.executor.models import Bot, BotRun, DeploymentType, ExecProbe, HealthCheck, HttpProbe

if TYPE_CHECKING:
    from codex32 import Container, ContainerEngine

CODE_DIR = "/bot"
STATE_DIR = "/state"
_LIVE = (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)

_HTTP_PROBE = """
import sys, urllib.request, urllib.error
try:
    status = urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).status
except urllib.error.HTTPError as e:
    status = e.code
except Exception as e:
    print(e); sys.exit(1)
print(status); sys.exit(0 if 200 <= status < 400 else 1)
"""
_TCP_PROBE = """
import socket, sys
socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
print("ok")
"""


def container_name(bot: Bot) -> str:
    """The bot's container: ``bot-NAME``, so ``codex32 ps`` shows which bot it is."""
    return f"bot-{bot.name}"


class ContainerBackend:
    """Bots as containers of the engine."""

    deployment_type = DeploymentType.CUSTOM_CONTAINER

    def __init__(self, storage_dir: Path, engine: Callable[[], ContainerEngine]) -> None:
        self.storage_dir = storage_dir
        self._engine = engine

    def container_config(self, bot: Bot) -> ContainerConfig:
        """The engine's config for ``bot`` (also what ``bot inspect`` shows)."""
        config = bot.deployment_config
        state = bot_dir(self.storage_dir, bot) / "state"
        return ContainerConfig(
            name=container_name(bot),
            image=config.image,
            command=["python3", f"{CODE_DIR}/{bot.script_name}", *bot.args],
            env={
                **bot.env,
                **resolve_secrets(bot),
                "BOT_ID": bot.id,
                "BOT_NAME": bot.name,
                "BOT_STATE_DIR": STATE_DIR,
                "PYTHONUNBUFFERED": "1",
            },
            working_dir=CODE_DIR,
            isolation=config.isolation,
            volumes=[
                Volume(source=str(bot.code_dir), target=CODE_DIR, read_only=True),
                Volume(source=str(state), target=STATE_DIR),
                *config.volumes,
            ],
            resources=config.resources,
            ulimits=config.ulimits,
            restart_policy=config.restart_policy,
            stop_timeout=config.stop_timeout,
            network=config.network,
            log_max_size=config.log_max_bytes,
            log_max_files=config.log_max_files,
        )

    def _get(self, bot: Bot) -> Container | None:
        try:
            return self._engine().containers.get(container_name(bot))
        except ContainerNotFoundError:
            return None

    def _prepare_state(self, bot: Bot) -> None:
        state = bot_dir(self.storage_dir, bot) / "state"
        state.mkdir(parents=True, exist_ok=True)
        if bot.deployment_config.isolation is IsolationType.STRICT:
            # STRICT's root is an unprivileged host uid: give it its state directory.
            uid = self._engine().settings.userns_uid_base
            os.chown(state, uid, uid)
        for parent in (state.parent, state.parent.parent, state.parent.parent.parent):
            os.chmod(parent, os.stat(parent).st_mode | 0o111)  # traversable by that uid

    async def start(self, bot: Bot, run: BotRun) -> Started:
        bot.check_code()
        await asyncio.to_thread(self._prepare_state, bot)
        config = self.container_config(bot)

        def launch() -> Started:
            old = self._get(bot)
            if old is not None:  # a container of an earlier deployment: its config is stale
                old.remove(force=True)
            container = self._engine().containers.run_detached(config)
            record = container.record
            return Started(started_at=record.started_at or time.time(), container_id=container.id)

        return await asyncio.to_thread(launch)

    async def status(self, bot: Bot, run: BotRun) -> Observed:
        def look() -> Observed:
            container = self._get(bot)
            if container is None or (run.container_id and container.id != run.container_id):
                return Observed(
                    running=False,
                    lost=True,
                    finished_at=time.time(),
                    reason="the container is gone",
                )
            record = container.record
            if container.state is ContainerState.RESTARTING:
                return Observed(
                    running=False,
                    restarting=True,
                    exit_code=record.exit_code,
                    finished_at=record.finished_at,
                )
            if container.state in _LIVE:
                return Observed(running=True)
            return Observed(
                running=False,
                exit_code=record.exit_code,
                finished_at=record.finished_at or time.time(),
                reason=record.error,
            )

        return await asyncio.to_thread(look)

    async def stop(self, bot: Bot, run: BotRun, timeout: float) -> None:
        def halt() -> None:
            container = self._get(bot)
            if container is not None and container.state in _LIVE:
                container.stop(timeout=timeout)

        await asyncio.to_thread(halt)

    async def restart(self, bot: Bot, timeout: float) -> None:
        """Restart the container in place (the engine records die and start)."""

        def again() -> None:
            container = self._get(bot)
            if container is None:
                raise ContainerNotFoundError(f"bot {bot.name} has no container")
            container.restart(timeout=timeout)

        await asyncio.to_thread(again)

    async def logs(
        self,
        bot: Bot,
        run: BotRun | None,
        *,
        follow: bool,
        tail: int | None,
        live: Callable[[], bool],
    ) -> AsyncIterator[str]:
        container = await asyncio.to_thread(self._get, bot)
        if container is None:
            return
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump() -> None:
            try:
                for entry in container.stream_logs(tail=tail, follow=follow):
                    loop.call_soon_threadsafe(queue.put_nowait, entry.text)
            except ContainerError:
                pass
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        task = asyncio.ensure_future(asyncio.to_thread(pump))
        while (text := await queue.get()) is not None:
            yield text
        await task

    async def probe(self, bot: Bot, run: BotRun, check: HealthCheck) -> ProbeResult:
        probe = check.probe
        timeout = f"{check.timeout:g}"
        if isinstance(probe, ExecProbe):
            command = list(probe.command)
        elif isinstance(probe, HttpProbe):
            url = f"http://{probe.host or '127.0.0.1'}:{probe.port}{probe.path}"
            command = ["python3", "-c", _HTTP_PROBE, url, timeout]
        else:
            command = [
                "python3",
                "-c",
                _TCP_PROBE,
                probe.host or "127.0.0.1",
                str(probe.port),
                timeout,
            ]

        def run_probe() -> ProbeResult:
            container = self._get(bot)
            if container is None or container.state is not ContainerState.RUNNING:
                return ProbeResult(False, "the container is not running")
            result = container.exec_run(command)
            output = (result.output + result.error_output).decode(errors="replace")
            return ProbeResult(result.exit_code == 0, output[-4096:])

        try:
            return await asyncio.wait_for(asyncio.to_thread(run_probe), check.timeout + 2)
        except TimeoutError:
            return ProbeResult(False, f"timed out after {check.timeout:g}s")
        except ContainerError as error:
            return ProbeResult(False, str(error))

    async def remove(self, bot: Bot) -> None:
        import shutil

        def drop() -> None:
            container = self._get(bot)
            if container is not None:
                container.remove(force=True)
            shutil.rmtree(bot_dir(self.storage_dir, bot), ignore_errors=True)

        await asyncio.to_thread(drop)

"""The backends behind ``AdaptiveExecutor``: one per ``DeploymentType``.

Each backend starts a run, stops it, says how it is (``status``), reads its logs and
probes its health; the executor owns the database, restart decisions and hooks, so
a backend knows nothing of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from codex32.executor.models import Bot, BotRun, DeploymentType, HealthCheck


@dataclass(frozen=True)
class Started:
    """Where a new run runs (the fields of ``BotRun`` a backend fills in)."""

    started_at: float
    pid: int | None = None
    pid_start_time: float | None = None
    container_id: str | None = None
    pod_name: str | None = None


@dataclass(frozen=True)
class Observed:
    """What a backend sees of a run: still going, ended (with its code), or lost."""

    running: bool
    exit_code: int | None = None
    finished_at: float | None = None
    lost: bool = False
    reason: str | None = None
    #: The engine is between two runs of a container (its restart policy acts).
    restarting: bool = False
    #: A process found running that the run had not recorded (its keeper's pid file).
    pid: int | None = None
    pid_start_time: float | None = None


@dataclass(frozen=True)
class ProbeResult:
    healthy: bool
    output: str = ""


class Backend(Protocol):
    """What the executor needs of a place to run bots."""

    deployment_type: DeploymentType

    async def start(self, bot: Bot, run: BotRun) -> Started: ...

    async def stop(self, bot: Bot, run: BotRun, timeout: float) -> None: ...

    async def status(self, bot: Bot, run: BotRun) -> Observed: ...

    def logs(
        self,
        bot: Bot,
        run: BotRun | None,
        *,
        follow: bool,
        tail: int | None,
        live: Callable[[], bool],
    ) -> AsyncIterator[str]: ...

    async def probe(self, bot: Bot, run: BotRun, check: HealthCheck) -> ProbeResult: ...

    async def remove(self, bot: Bot) -> None: ...


def bot_dir(storage_dir: Path, bot: Bot) -> Path:
    """``STORAGE/executor/bots/ID``: the bot's logs, exit files and state directory."""
    return storage_dir / "executor" / "bots" / bot.id


def resolve_secrets(bot: Bot) -> dict[str, str]:
    """The values of the bot's secret references, read when it starts."""
    import os

    from codex32 import ConfigError

    values = {}
    for name, ref in bot.secrets.items():
        kind, _, where = ref.partition(":")
        if kind == "env":
            if where not in os.environ:
                raise ConfigError(
                    f"bot {bot.name}: secret {name} refers to ${where}, which is unset",
                    hint=f"export {where} in the executor's environment",
                )
            values[name] = os.environ[where]
        else:
            try:
                values[name] = Path(where).read_text().rstrip("\n")
            except OSError as error:
                raise ConfigError(
                    f"bot {bot.name}: secret {name}: cannot read {where}: {error.strerror}"
                ) from None
    return values

"""Restart decisions from a bot's run history: Docker's policy and back-off.

Back-off as dockerd's restart manager and the engine's monitor: 100 ms before the
first restart, doubling for each run in a row that lasted under 10 s, at most 60 s;
a run of 10 s or more resets it. Pure functions of the runs, so that an executor
that restarts (or another one) reaches the same decision from the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from codex32 import RestartPolicy
from codex32.executor.models import BotRun, RunState

BACKOFF_START = 0.1
BACKOFF_MAX = 60.0
RESET_AFTER = 10.0
RESTART_TRIGGERS = frozenset({"policy", "unhealthy", "recover"})


def restarts_in_a_row(runs: Sequence[BotRun]) -> int:
    """How many of the latest runs (newest first) were restarts, not user starts."""
    count = 0
    for run in runs:
        if run.trigger not in RESTART_TRIGGERS:
            break
        count += 1
    return count


def should_restart(policy: RestartPolicy, runs: Sequence[BotRun]) -> bool:
    """Whether the policy restarts after the latest (finished) run."""
    if not runs or runs[0].live or runs[0].state is RunState.STOPPED:
        return False
    last = runs[0]
    if policy.name in ("always", "unless-stopped"):
        return True
    if policy.name == "on-failure":
        failed = last.state in (RunState.LOST, RunState.FAILED) or last.exit_code != 0
        limit = policy.maximum_retry_count
        return failed and (limit == 0 or restarts_in_a_row(runs) < limit)
    return False


def restart_delay(runs: Sequence[BotRun]) -> float:
    """Seconds to wait after the latest run ended before starting the next."""
    short = 0
    for run in runs:
        if run.finished_at is None or run.finished_at - run.started_at >= RESET_AFTER:
            break
        short += 1
    return float(min(BACKOFF_START * 2.0 ** max(short - 1, 0), BACKOFF_MAX))

"""``wait()`` on an ``--rm`` container answers its exit code however fast it is removed.

Its monitor removes it a few ms after the exit; a waiter may look before, during or
after that. The ``die`` event keeps the code when the record is gone. Each test holds
the race at one point (the removal finished first), so it fails if that point raises.
"""

from __future__ import annotations

import dataclasses

import pytest
from helpers import BUSYBOX

from codex32 import ContainerConfig, ContainerEngine
from codex32._engine import waiting
from codex32._store.state import ContainerRecord, ContainerState

pytestmark = pytest.mark.root


def _rm(script: str) -> ContainerConfig:
    return ContainerConfig(image=BUSYBOX, command=["sh", "-c", script], auto_remove=True,
                           network="none")  # fmt: skip


def test_removed_before_the_wait_looked(engine: ContainerEngine) -> None:
    container = engine.containers.run_detached(_rm("sleep 0.3; exit 3"))
    waiting.wait_removed(engine, container.id, 10)
    assert container.wait(timeout=10) == 3


def test_removed_between_the_exit_record_and_the_reload(
    engine: ContainerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = engine.containers.run_detached(_rm("sleep 0.3; exit 2"))
    running = container.record

    def recorded_then_removed(eng: ContainerEngine, cid: str, timeout: float) -> ContainerRecord:
        """The exit record seen, and the container removed before the waiter reloads."""
        waiting.wait_removed(eng, cid, 10)
        return dataclasses.replace(running, status=ContainerState.EXITED, exit_code=2)

    monkeypatch.setattr(waiting, "wait_recorded", recorded_then_removed)
    assert container.wait(timeout=10) == 2

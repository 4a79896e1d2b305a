"""How the engine judges a live record against the kernel (``_engine._liveness``).

Real processes stand in for PID 1 and the monitor: this process (alive), and a child
that has exited and been reaped (gone).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from codex32._engine.records import liveness as _liveness
from codex32._store.state import ContainerRecord, ContainerState, process_start_time

ALIVE = (os.getpid(), process_start_time(os.getpid()))


@pytest.fixture(scope="module")
def gone() -> tuple[int, int]:
    child = subprocess.Popen(["sleep", "5"])
    start = process_start_time(child.pid)
    assert start is not None
    child.kill()
    child.wait()
    return child.pid, start


def record(
    status: ContainerState,
    pid1: tuple[int | None, int | None],
    monitor: tuple[int | None, int | None],
    finished_at: float | None = None,
) -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64, name="n", image="busybox", status=status,
        pid=pid1[0], pid_start_time=pid1[1],
        monitor_pid=monitor[0], monitor_start_time=monitor[1], finished_at=finished_at,
    )  # fmt: skip


@pytest.mark.parametrize("status", [ContainerState.CREATED, ContainerState.EXITED])
def test_a_record_that_is_not_live_needs_nothing(
    status: ContainerState, gone: tuple[int, int]
) -> None:
    assert _liveness(record(status, gone, gone)) == "ok"


def test_running_with_its_pid1_is_ok(gone: tuple[int, int]) -> None:
    assert _liveness(record(ContainerState.RUNNING, ALIVE, gone)) == "ok"


def test_pid1_gone_while_the_monitor_lives_is_settling(gone: tuple[int, int]) -> None:
    assert _liveness(record(ContainerState.RUNNING, gone, ALIVE)) == "settling"


def test_pid1_and_monitor_gone_is_orphaned(gone: tuple[int, int]) -> None:
    assert _liveness(record(ContainerState.RUNNING, gone, gone)) == "orphaned"
    assert _liveness(record(ContainerState.PAUSED, gone, gone)) == "orphaned"


def test_a_reused_pid_is_not_the_recorded_process() -> None:
    pid, start = ALIVE
    assert start is not None
    assert _liveness(record(ContainerState.RUNNING, (pid, start + 1), (pid, start + 1))) == (
        "orphaned"
    )


def test_restarting_is_ok_while_its_monitor_backs_off(gone: tuple[int, int]) -> None:
    # The regression: PID 1 gone (it crashed) and the status RESTARTING is the normal
    # back-off, not a record to mark lost once a wait for EXITED runs out.
    long_ago = time.time() - 60
    assert _liveness(record(ContainerState.RESTARTING, gone, ALIVE, long_ago)) == "ok"


def test_restarting_without_a_monitor_is_ok_only_for_a_moment(gone: tuple[int, int]) -> None:
    assert _liveness(record(ContainerState.RESTARTING, gone, gone, time.time())) == "ok"
    long_ago = time.time() - 60
    assert _liveness(record(ContainerState.RESTARTING, gone, gone, long_ago)) == "orphaned"

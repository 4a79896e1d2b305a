"""OOM kills are reported as they happen, not only when PID 1 exits (real containers).

Docker appends an ``oom`` event as soon as the kernel OOM-kills any process of a
container, while the container keeps running. The monitor does the same from the
kernel's notification (v1: an eventfd on ``memory.oom_control``; v2: POLLPRI on
``memory.events``); at exit it reports only the kills it has not reported yet, so
one kill gives one ``oom`` event.

Driver-agnostic, like ``test_resources.py`` (whose helpers these reuse): the v1
driver on the hybrid development host, v2 inside the VM of ``tests/vm/run_engine_v2.sh``.
"""

from __future__ import annotations

import shlex
import uuid

import pytest
from test_resources import MEMORY_HOG, MIB, PYTHON, events_of, need, removed_after, wait_for

from codex32 import Container, ContainerConfig, ContainerEngine, ContainerState, ResourceLimits

pytestmark = pytest.mark.root

LIMIT = 32 * MIB  # swap included: the hog is killed, not swapped out

#: PID 1 (sh, a few hundred KiB: never the OOM killer's pick) runs the hog KILLS times,
#: then waits; SIGTERM ends it with 0, so only the hogs are killed.
HOGS_THEN_WAIT = """
trap 'exit 0' TERM
for i in $(seq {kills}); do python3 -c {hog}; echo "hog $i: $?"; done
sleep 1000 & wait
"""


def _actions(engine: ContainerEngine, container: Container) -> list[str]:
    return [action for action, _ in events_of(engine, container.id)]


def _oom_events(engine: ContainerEngine, container: Container) -> int:
    return _actions(engine, container).count("oom")


def _running(container: Container) -> bool:
    container.reload()
    return container.state is ContainerState.RUNNING


@pytest.mark.parametrize("kills", [1, 2])
def test_a_child_killed_by_oom_is_reported_while_pid1_runs(
    engine: ContainerEngine, kills: int
) -> None:
    need(engine, "memory")
    name = f"oomlive-{uuid.uuid4().hex[:8]}"
    config = ContainerConfig(
        name=name,
        image=PYTHON,
        command=["sh", "-c", HOGS_THEN_WAIT.format(kills=kills, hog=shlex.quote(MEMORY_HOG))],
        resources=ResourceLimits(memory_bytes=LIMIT, memory_swap_bytes=LIMIT),
    )
    with removed_after(engine, name):
        container = engine.containers.run_detached(config)
        last = f"hog {kills}: 137"  # sh saw its child die of SIGKILL
        wait_for(lambda: last in container.logs().decode(), 60, f"{last!r} in the logs")
        wait_for(lambda: _oom_events(engine, container) >= kills, 10, f"{kills} oom events")
        assert _running(container), "PID 1 should outlive its OOM-killed children"
        assert container.record.oom_killed is True, "OOMKilled shows while it runs"
        assert container.stats().oom_kills == kills
        assert _oom_events(engine, container) == kills, "one oom event per kill"
        print(f"oom live: {kills} kill(s) reported while running")

        container.stop(timeout=10)
        container.reload()
        record = container.record
        # The monitor appends ``die`` after recording the exit (which ``stop`` waits
        # for), and any ``oom`` for a kill not reported yet before ``die``.
        wait_for(lambda: "die" in _actions(engine, container), 10, "the die event")
        events = events_of(engine, container.id)
        actions = [action for action, _ in events]
        assert record.status is ContainerState.EXITED
        assert record.exit_code == 0, "PID 1 ended on SIGTERM, by its trap"
        assert record.oom_killed is True, "a kill since the start is Docker's OOMKilled"
        assert actions.count("oom") == kills, f"an oom reported twice: {events}"
        assert ("die", {"exitCode": "0"}) in events, events
        assert max(i for i, a in enumerate(actions) if a == "oom") < actions.index("die")


def test_pid1_killed_by_oom_gives_one_oom_event_before_die(engine: ContainerEngine) -> None:
    """The monitor may see the kill both live and at exit: it reports it once."""
    need(engine, "memory")
    name = f"oomlive-{uuid.uuid4().hex[:8]}"
    config = ContainerConfig(
        name=name,
        image=PYTHON,
        command=["python3", "-c", MEMORY_HOG],
        resources=ResourceLimits(memory_bytes=LIMIT, memory_swap_bytes=LIMIT),
    )
    with removed_after(engine, name):
        result = engine.containers.run(config)
        container = engine.containers.get(name)
        events = events_of(engine, container.id)
        actions = [action for action, _ in events]
        assert result.exit_code == 137, result
        assert container.record.oom_killed is True
        assert actions.count("oom") == 1, f"one kill, one oom event: {events}"
        assert actions.index("oom") < actions.index("die")

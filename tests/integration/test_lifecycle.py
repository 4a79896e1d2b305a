"""Container lifecycle through the Python API, against the real kernel.

States and transitions (created -> running -> paused -> exited -> removed), every
verb refreshing from the kernel (a new engine, a killed monitor, a reused pid),
and the restart policies applied by the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import host_tmpdir
from lifecycle_support import (
    Containers,
    containers,  # noqa: F401 - a pytest fixture, used by name
    dead,
    eventually,
    ready,
    sh,
)

from codex32 import (
    Codex32Error,
    Container,
    ContainerEngine,
    ContainerNotFoundError,
    ContainerState,
    RestartPolicy,
    StateError,
    Volume,
    get_engine,
    init_engine,
    shutdown_engine,
)
from codex32._store.events import Event
from codex32._store.state import process_start_time

pytestmark = pytest.mark.root

# Prints "ready" once its traps are set (before that, PID 1 ignores SIGTERM).
LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"


def state(container: Container) -> ContainerState:
    """The handle's state as last refreshed (a call, so that mypy does not narrow it)."""
    return container.state


def state_file(engine: ContainerEngine, container: Container) -> Path:
    return engine.settings.storage_dir / "containers" / container.id / "state.json"


def actions(engine: ContainerEngine, container: Container) -> list[str]:
    return [e.action for e in engine.events(filters={"container": [container.id]})]


# -- states and transitions ----------------------------------------------------------


def test_created_running_exited(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.create(sh(LOOP))
    assert state(container) is ContainerState.CREATED
    assert (container.record.pid, container.record.exit_code) == (None, None)
    assert container.id not in [c.id for c in engine.containers.list()]
    assert container.id in [c.id for c in engine.containers.list(all=True)]

    container.start()
    assert state(container) is ContainerState.RUNNING
    assert eventually(lambda: ready(container), 15)
    pid = container.record.pid
    assert pid is not None and not dead(pid)
    assert container.record.pid_start_time == process_start_time(pid)
    assert container.record.started_at is not None
    assert container.id in [c.id for c in engine.containers.list()]

    monitor = container.record.monitor_pid
    container.stop(timeout=5)
    assert state(container) is ContainerState.EXITED
    assert (container.record.exit_code, container.record.signal) == (0, 0)
    assert container.record.finished_at is not None
    assert container.record.finished_at >= container.record.started_at
    assert dead(pid)
    assert container.id not in [c.id for c in engine.containers.list()]
    assert container.wait() == 0
    # The default restart policy is "no": its monitor ends, and it stays exited.
    assert eventually(lambda: dead(monitor), 10)
    container.reload()
    assert state(container) is ContainerState.EXITED
    assert container.record.restart_count == 0


def test_an_exited_container_starts_again(containers: Containers) -> None:
    container = containers.create(sh("echo run; exit 3"))
    container.start()
    assert container.wait(timeout=10) == 3
    first_pid = container.record.pid
    container.start()
    assert container.wait(timeout=10) == 3
    assert container.record.pid != first_pid
    assert container.logs() == b"run\nrun\n"


def test_start_of_a_running_container_is_a_state_error(
    engine: ContainerEngine, containers: Containers
) -> None:
    container = containers.running(sh(LOOP))
    before = state_file(engine, container).read_bytes()
    with pytest.raises(StateError, match="already running") as raised:
        container.start()
    assert container.name in str(raised.value)
    assert state_file(engine, container).read_bytes() == before
    container.reload()
    assert state(container) is ContainerState.RUNNING
    assert not dead(container.record.pid)


def test_remove_of_a_running_container_needs_force(
    engine: ContainerEngine, containers: Containers
) -> None:
    container = containers.running(sh(LOOP, name="lifecycle-rm-force"))
    pid = container.record.pid
    directory = engine.settings.storage_dir / "containers" / container.id
    before = state_file(engine, container).read_bytes()
    with pytest.raises(StateError, match="cannot remove a running container"):
        container.remove()
    assert state_file(engine, container).read_bytes() == before
    assert not dead(pid)
    assert engine.containers.get("lifecycle-rm-force").state is ContainerState.RUNNING

    container.remove(force=True)
    assert state(container) is ContainerState.REMOVED
    assert dead(pid)
    assert not directory.exists()
    with pytest.raises(ContainerNotFoundError):
        engine.containers.get("lifecycle-rm-force")
    with pytest.raises(ContainerNotFoundError):
        engine.containers.get(container.id)
    # The name is free again.
    containers.create(sh("true", name="lifecycle-rm-force"))


def test_kill_with_a_bad_signal_is_refused(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.running(sh(LOOP))
    before = state_file(engine, container).read_bytes()
    for bad in ("SIGFOO", "NOSUCH", "0", "999", "-1", ""):
        with pytest.raises((ValueError, Codex32Error), match="signal"):
            container.kill(bad)
    assert state_file(engine, container).read_bytes() == before
    assert "kill" not in actions(engine, container)
    container.reload()
    assert state(container) is ContainerState.RUNNING
    assert not dead(container.record.pid)


def test_kill_delivers_the_signal(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.running(sh("trap 'exit 7' USR1; " + LOOP))
    container.kill("USR1")
    assert container.wait(timeout=10) == 7
    assert container.record.signal == 0

    container.start()
    container.kill("SIGKILL")
    assert container.wait(timeout=10) == 137
    assert container.record.signal == signal.SIGKILL
    with pytest.raises(StateError, match="exited"):
        container.kill("SIGTERM")


def _wait_while_started_later(container: Container) -> int:
    """``wait()`` on a created container that another thread starts 0.3 s later."""
    starter = threading.Timer(0.3, container.start)
    starter.start()
    try:
        return container.wait(timeout=20)
    finally:
        starter.join()


def test_wait_returns_the_exit_code(containers: Containers) -> None:
    never_started = containers.create(sh("exit 42"))
    with pytest.raises(TimeoutError, match="not started"):
        never_started.wait(timeout=0.2)
    # As docker wait: waiting on a created container waits through its coming run.
    assert _wait_while_started_later(never_started) == 42
    assert never_started.wait() == 42  # again, once exited
    # An --rm one may be gone before the waiter sees it run: its die event tells.
    assert _wait_while_started_later(containers.create(sh("exit 7", auto_remove=True))) == 7
    assert never_started.state is ContainerState.EXITED

    running = containers.running(sh(LOOP))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        running.wait(timeout=0.3)
    assert time.monotonic() - started < 5
    running.kill("TERM")
    assert running.wait(timeout=10) == 0


def test_restart_keeps_an_auto_remove_container(engine: ContainerEngine) -> None:
    """As docker restart: an --rm container is stopped and started, not removed."""
    container = engine.containers.run_detached(sh(LOOP, auto_remove=True))
    try:
        assert eventually(lambda: ready(container), 15), container.logs()
        old_pid = container.record.pid
        container.restart(timeout=5)
        assert container.state is ContainerState.RUNNING and container.record.pid != old_pid
        assert eventually(lambda: ready(container, times=2), 15), container.logs()
        container.stop(timeout=5)  # and an --rm container again: removed when it stops
        assert state(container) is ContainerState.REMOVED
    finally:
        with contextlib.suppress(ContainerNotFoundError):
            container.remove(force=True)


def test_restart_gives_a_new_pid(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.running(sh(LOOP))
    old_pid, old_start = container.record.pid, container.record.pid_start_time
    container.restart(timeout=5)
    assert state(container) is ContainerState.RUNNING
    new_pid = container.record.pid
    assert new_pid is not None and not dead(new_pid)
    assert (new_pid, container.record.pid_start_time) != (old_pid, old_start)
    assert dead(old_pid) or process_start_time(old_pid or 0) != old_start
    assert new_pid == engine.containers.get(container.id).record.pid
    seen = actions(engine, container)
    assert seen.count("start") == 2
    assert seen[-1] == "restart"


def test_pause_freezes_the_container(engine: ContainerEngine, containers: Containers) -> None:
    with host_tmpdir() as data:
        counter = data / "n"

        def count() -> int:
            return int(counter.read_text())

        script = (
            "i=0; while true; do i=$((i+1)); echo $i > /data/n.tmp; mv /data/n.tmp /data/n; "
            "sleep 0.02; done"
        )
        container = containers.started(
            sh(script, volumes=[Volume(source=str(data), target="/data")])
        )
        assert eventually(lambda: counter.exists() and count() > 2, 10)

        container.pause()
        assert state(container) is ContainerState.PAUSED
        assert engine.containers.get(container.id).state is ContainerState.PAUSED
        time.sleep(0.1)  # a write under way when the freeze came has landed
        frozen = count()
        time.sleep(0.4)
        assert count() == frozen
        assert not dead(container.record.pid)
        with pytest.raises(StateError, match="paused"):
            container.start()
        with pytest.raises(StateError, match="paused"):
            container.pause()
        with pytest.raises(StateError, match="paused"):
            container.exec_run(["true"])

        container.unpause()
        assert state(container) is ContainerState.RUNNING
        assert eventually(lambda: count() > frozen + 3, 5)
        with pytest.raises(StateError, match="running"):
            container.unpause()

        # A paused container can still be stopped (it is thawed to get the signal).
        container.pause()
        container.stop(timeout=2)
        assert state(container) is ContainerState.EXITED
        assert dead(container.record.pid)
        assert [a for a in actions(engine, container) if a in ("pause", "unpause")] == [
            "pause",
            "unpause",
            "pause",
        ]


def test_prune_removes_only_stopped_containers(
    engine: ContainerEngine, containers: Containers
) -> None:
    created = containers.create(sh("true"))
    exited = containers.started(sh("exit 0"))
    assert exited.wait(timeout=10) == 0
    running = containers.running(sh(LOOP))
    removed = engine.containers.prune()
    assert created.id in removed
    assert exited.id in removed
    assert running.id not in removed
    ids = [c.id for c in engine.containers.list(all=True)]
    assert created.id not in ids and exited.id not in ids
    assert engine.containers.get(running.id).state is ContainerState.RUNNING


# -- every verb refreshes from the kernel ------------------------------------------


def test_state_survives_a_new_engine(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.running(sh(LOOP, name="lifecycle-survivor"))
    other = ContainerEngine(settings=engine.settings)
    try:
        seen = other.containers.get("lifecycle-survivor")
        assert seen.id == container.id
        assert seen.state is ContainerState.RUNNING
        assert seen.record.pid == container.record.pid
        assert seen.record.pid_start_time == container.record.pid_start_time
        assert container.id in [c.id for c in other.containers.list()]

        seen.stop(timeout=5)
        container.reload()
        assert state(container) is ContainerState.EXITED
        assert container.record.exit_code == 0
        seen.start()  # and the first engine sees that too
        container.reload()
        assert state(container) is ContainerState.RUNNING
        assert container.record.pid == seen.record.pid
    finally:
        other.close()


def test_a_killed_monitor_is_detected(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.started(sh("sleep 1000"))
    pid, monitor = container.record.pid, container.record.monitor_pid
    assert pid is not None and monitor is not None and pid != monitor
    os.kill(monitor, signal.SIGKILL)  # the monitor is a process this test started
    assert eventually(lambda: dead(monitor), 5)
    container.reload()
    assert state(container) is ContainerState.RUNNING  # PID 1 itself still runs

    os.kill(pid, signal.SIGKILL)
    assert eventually(lambda: dead(pid), 5)
    container.reload()  # the next refresh sees that PID 1 is gone
    assert state(container) is ContainerState.EXITED
    assert container.record.exit_code is not None
    assert container.record.finished_at is not None
    assert "monitor" in (container.record.error or "")
    saved = json.loads(state_file(engine, container).read_text())
    assert saved["status"] == "exited"
    assert engine.containers.get(container.id).state is ContainerState.EXITED
    # It can be started again, under a new monitor.
    container.start()
    assert state(container) is ContainerState.RUNNING
    assert container.record.monitor_pid not in (None, monitor)
    assert container.record.error is None


def _forge(path: Path, **fields: Any) -> None:
    """Rewrite fields of a state.json (as if the host had rebooted, or pids wrapped)."""
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_a_reused_pid_is_not_taken_for_the_container(
    engine: ContainerEngine, containers: Containers
) -> None:
    container = containers.started(sh("exit 0"))
    assert container.wait(timeout=10) == 0
    path = state_file(engine, container)
    # An unrelated process now holds a pid; the record names that pid with the start
    # time of another process (what the record says after the pid was reused).
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        real_start = process_start_time(stranger.pid)
        assert real_start is not None
        as_if_running = {
            "status": "running", "pid": stranger.pid, "exit_code": None,
            "finished_at": None, "monitor_pid": None, "monitor_start_time": None,
        }  # fmt: skip

        # Control: with the right start time the record does name that process.
        _forge(path, **as_if_running, pid_start_time=real_start)
        container.reload()
        assert state(container) is ContainerState.RUNNING

        _forge(path, **as_if_running, pid_start_time=real_start + 1)
        container.reload()
        assert state(container) is ContainerState.EXITED
        assert json.loads(path.read_text())["status"] == "exited"

        _forge(path, **as_if_running, pid_start_time=real_start + 1)
        with pytest.raises(StateError):
            container.kill("SIGKILL")
        _forge(path, **as_if_running, pid_start_time=real_start + 1)
        container.stop(timeout=1)
        assert state(container) is ContainerState.EXITED
        _forge(path, **as_if_running, pid_start_time=real_start + 1)
        container.remove(force=True)
        assert not path.exists()
        assert stranger.poll() is None, "a verb signalled a process that reused the pid"
    finally:
        stranger.kill()
        stranger.wait()


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout


def test_init_engine_reconciles_after_a_crash(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    from codex32._linux.netlink import host_ifname

    container = containers.started(sh("exit 0", name="lifecycle-reconciled"))
    assert container.wait(timeout=10) == 0
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists, as after a reboot
    _forge(
        state_file(engine, container), status="running", pid=gone.pid, pid_start_time=12345,
        exit_code=None, finished_at=None, monitor_pid=None, monitor_start_time=None,
    )  # fmt: skip
    half_made = storage_dir / "containers" / secrets.token_hex(32)
    (half_made / "upper").mkdir(parents=True)  # creation never finished: no state.json
    long_ago = time.time() - 3600
    os.utime(half_made, (long_ago, long_ago))  # (a fresh one may be under way elsewhere)
    ghost = storage_dir / "names" / "lifecycle-ghost"
    ghost.symlink_to(f"../containers/{secrets.token_hex(32)}")
    # A container removed half-way: its address lease and host link are still there.
    vanished = secrets.token_hex(32)
    ipam = engine._networking.ipam
    ipam.allocate("bridge", vanished)
    link = host_ifname(vanished)
    peer = f"c32q{vanished[:11]}"  # (no dummy links on this kernel: a veth pair)
    subprocess.run(["ip", "link", "add", link, "type", "veth", "peer", "name", peer], check=True)
    try:
        reconciled = asyncio.run(init_engine(storage_dir))  # as the host service starts
        assert get_engine() is reconciled
    finally:
        asyncio.run(shutdown_engine())
        leftover_link = f" {link}:" in _links()
        subprocess.run(["ip", "link", "del", link], capture_output=True, check=False)
        leftover_lease = ipam.release("bridge", vanished)
    assert not leftover_link, "the link of a vanished container was kept"
    assert not leftover_lease, "the lease of a vanished container was kept"
    assert not half_made.exists()
    assert not ghost.is_symlink()
    saved = json.loads(state_file(engine, container).read_text())
    assert saved["status"] == "exited"
    assert saved["exit_code"] is not None and saved["error"]
    assert (storage_dir / "names" / "lifecycle-reconciled").is_symlink()
    assert engine.containers.get("lifecycle-reconciled").state is ContainerState.EXITED


def test_init_engine_brings_back_what_a_crash_took_down(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    """As dockerd at start: a container that died unseen (monitor and PID 1 killed, as
    by a reboot) is started again when its restart policy says so, an --rm one is
    removed, and one without a policy is only marked exited."""
    always = containers.running(sh(LOOP, restart_policy=RestartPolicy(name="always")))
    plain = containers.running(sh(LOOP))
    auto = containers.running(sh(LOOP, auto_remove=True))
    old_pid = always.record.pid
    for container in (always, plain, auto):
        for pid in (container.record.monitor_pid, container.record.pid):
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        assert eventually(lambda c=container: dead(c.record.monitor_pid), 10)  # type: ignore[misc]
    # A verb after the reboot (here `ps -a`) already marks them exited: still lost.
    assert {c.state for c in engine.containers.list(all=True) if c.id == always.id} == {
        ContainerState.EXITED
    }
    try:
        asyncio.run(init_engine(storage_dir))
    finally:
        asyncio.run(shutdown_engine())
    always.reload()
    assert always.state is ContainerState.RUNNING
    assert always.record.pid != old_pid and always.record.restart_count == 1
    assert eventually(lambda: ready(always, times=2), 15), always.logs()
    assert "restart" in actions(engine, always)
    plain.reload()
    assert plain.state is ContainerState.EXITED and plain.record.error
    with pytest.raises(ContainerNotFoundError):
        engine.containers.get(auto.id)


def test_reconcile_leaves_a_creation_under_way_alone(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """init_engine() in one process while another is half-way through a create."""
    import fcntl

    creating = storage_dir / "containers" / secrets.token_hex(32)
    (creating / "upper").mkdir(parents=True)
    name = storage_dir / "names" / "lifecycle-creating"
    name.symlink_to(f"../containers/{creating.name}")
    lock = os.open(creating / "operation.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as create holds it until state.json exists
        long_ago = time.time() - 3600
        os.utime(creating, (long_ago, long_ago))
        ipam = engine._networking.ipam
        ipam.allocate("bridge", creating.name)  # create leases before state.json exists
        assert creating.name not in engine.reconcile()
        assert creating.is_dir() and name.is_symlink()
        assert creating.name in ipam.leases("bridge"), "a create's lease was taken away"
    finally:
        os.close(lock)
    # The creator died without finishing: the lock is free, the leftovers go.
    assert creating.name in engine.reconcile()
    assert not creating.exists() and not name.is_symlink()
    assert creating.name not in engine._networking.ipam.leases("bridge")


# -- restart policies ------------------------------------------------------------------


def _record_where(container: Container, check: Callable[[Container], bool]) -> bool:
    """Reload ``container`` until ``check`` holds (True), or 30 s pass (False)."""

    def probe() -> bool:
        container.reload()
        return check(container)

    return eventually(probe, 30, 0.05)


def test_on_failure_restarts_n_times_then_gives_up(
    engine: ContainerEngine, containers: Containers
) -> None:
    policy = RestartPolicy(name="on-failure", maximum_retry_count=2)
    container = containers.started(sh("echo ran; exit 1", restart_policy=policy))

    def done(c: Container) -> bool:
        return (
            c.state is ContainerState.EXITED
            and c.record.restart_count == 2
            and dead(c.record.monitor_pid)
        )

    # The last monitor has exited: nobody is left to restart it a third time.
    assert _record_where(container, done), container.record
    container.reload()
    assert state(container) is ContainerState.EXITED
    assert (container.record.restart_count, container.record.exit_code) == (2, 1)
    assert container.logs() == b"ran\n" * 3
    events = list(engine.events(filters={"container": [container.id]}))
    assert [e.action for e in events if e.action == "start"] == ["start"] * 3
    assert [e.attributes.get("exitCode") for e in events if e.action == "die"] == ["1"] * 3
    assert [e.action for e in events if e.action == "restart"] == ["restart"] * 2
    # The restarts ran with this engine's settings: the cgroup is under its parent.
    parent = f"/{engine.settings.cgroup_parent}/{container.id}"
    assert container.record.cgroup_paths
    assert all(p.endswith(parent) for p in container.record.cgroup_paths.values()), (
        container.record.cgroup_paths
    )


def test_on_failure_does_not_restart_a_success(
    engine: ContainerEngine, containers: Containers
) -> None:
    policy = RestartPolicy(name="on-failure", maximum_retry_count=3)
    container = containers.started(sh("exit 0", restart_policy=policy))
    monitor = container.record.monitor_pid
    assert container.wait(timeout=10) == 0
    assert eventually(lambda: dead(monitor), 10), "the monitor did not finish"
    container.reload()
    assert (container.state, container.record.restart_count) == (ContainerState.EXITED, 0)
    assert actions(engine, container).count("start") == 1


def test_always_restarts_with_growing_back_off_until_stopped(
    engine: ContainerEngine, containers: Containers
) -> None:
    container = containers.started(sh("exit 3", restart_policy=RestartPolicy(name="always")))

    def events() -> list[Event]:
        return list(engine.events(filters={"container": [container.id]}))

    def starts() -> int:
        return [e.action for e in events()].count("start")

    # Four restarts: back-offs of 0.1, 0.2, 0.4 and 0.8 s; the next one is 1.6 s.
    if not eventually(lambda: starts() >= 5, 60, 0.05):
        record = engine.containers.get(container.id).record
        pytest.fail(
            f"restarts stopped: events {actions(engine, container)}; status "
            f"{record.status.value}, restart_count {record.restart_count}, error "
            f"{record.error!r}, monitor {record.monitor_pid} alive: {not dead(record.monitor_pid)}"
        )

    def backing_off(c: Container) -> bool:
        return c.state is ContainerState.RESTARTING and c.record.restart_count == 4

    assert _record_where(container, backing_off), container.record
    monitor = container.record.monitor_pid
    container.stop(timeout=2)  # during the back-off
    assert state(container) is ContainerState.EXITED
    assert eventually(lambda: dead(monitor), 10), "the monitor did not give up"
    container.reload()
    assert state(container) is ContainerState.EXITED
    assert container.record.restart_count == 4
    assert starts() == 5, "the container came back after stop"

    # The pause between a death and the next start doubles each time: each one is at
    # least its back-off, 0.1 s * 2**n (start-up time under load only adds to it).
    seen = events()
    dies = [e.time for e in seen if e.action == "die"]
    start_times = [e.time for e in seen if e.action == "start"]
    gaps = [start_times[n + 1] - dies[n] for n in range(4)]
    for n, gap in enumerate(gaps):
        assert gap >= 0.1 * 2**n - 0.01, (n, gaps)
    assert {e.attributes.get("exitCode") for e in seen if e.action == "die"} == {"3"}


def test_stop_right_after_a_crash_stops_for_good(
    engine: ContainerEngine, containers: Containers
) -> None:
    # PID 1 exits on its own, and the user stops the container at that moment
    # (before the monitor has scheduled the restart): it must stay stopped.
    policy = RestartPolicy(name="always")
    container = containers.started(sh("sleep 0.5; exit 3", restart_policy=policy))
    monitor = container.record.monitor_pid
    path = state_file(engine, container)

    def recorded_exit() -> bool:
        with contextlib.suppress(ValueError):  # caught between write and rename
            return bool(json.loads(path.read_bytes())["status"] == "exited")
        return False

    # The monitor has written the exit down and is deciding about the restart.
    assert eventually(recorded_exit, 10, 0.0005)
    container.stop(timeout=2)
    assert state(container) is ContainerState.EXITED
    # The monitor is done once it has restarted the container, or decided not to.
    assert eventually(lambda: dead(monitor), 15), "the monitor did not finish"
    container.reload()
    assert state(container) is ContainerState.EXITED, container.record
    assert container.record.restart_count == 0
    assert actions(engine, container).count("start") == 1


def test_always_restarts_a_crashed_long_runner(
    engine: ContainerEngine, containers: Containers
) -> None:
    container = containers.running(sh(LOOP, restart_policy=RestartPolicy(name="always")))
    first = container.record.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)  # a crash from outside (not a stop)

    def back(c: Container) -> bool:
        return c.state is ContainerState.RUNNING and c.record.pid not in (None, first)

    assert _record_where(container, back), container.record
    assert container.record.restart_count == 1
    assert not dead(container.record.pid)
    assert eventually(lambda: ready(container, times=2), 15)
    monitor = container.record.monitor_pid
    container.stop(timeout=5)
    assert state(container) is ContainerState.EXITED
    assert eventually(lambda: dead(monitor), 10), "the monitor did not finish"
    container.reload()
    assert state(container) is ContainerState.EXITED
    assert container.record.exit_code == 0


def test_force_removing_an_auto_remove_container_races_its_monitor_cleanly(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """``rm -f`` of a running ``--rm`` container: the monitor removes it as it dies.

    Whichever of the two gets there first, the call succeeds, the container and its
    name are gone, and a new container may take the name at once.
    """
    name = f"rm-race-{secrets.token_hex(4)}"
    for _ in range(5):
        container = engine.containers.run_detached(sh(LOOP, name=name, auto_remove=True))
        container.remove(force=True)
        assert container.state is ContainerState.REMOVED
        with pytest.raises(ContainerNotFoundError):
            engine.containers.get(name)
    successor = engine.containers.run_detached(sh(LOOP, name=name, auto_remove=True))
    try:
        time.sleep(0.5)  # a late removal of a predecessor must not take its name
        assert engine.containers.get(name).id == successor.id
    finally:
        successor.remove(force=True)
    assert not (storage_dir / "names" / name).exists()


def test_stop_and_wait_work_on_auto_remove_containers(engine: ContainerEngine) -> None:
    """As ``docker stop``/``docker wait`` on an ``--rm`` container: its monitor removes
    it as it dies; stop still succeeds, and wait still returns the exit code."""
    stopped = engine.containers.run_detached(sh(LOOP, auto_remove=True))
    stopped.stop(timeout=5)
    assert stopped.state is ContainerState.REMOVED
    with pytest.raises(ContainerNotFoundError):
        engine.containers.get(stopped.id)

    exiting = engine.containers.run_detached(sh("sleep 0.3; exit 3", auto_remove=True))
    assert exiting.wait(timeout=20) == 3
    assert eventually(
        lambda: not (engine.settings.storage_dir / "containers" / exiting.id).exists(), 10
    )

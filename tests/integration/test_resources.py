"""Resource control through real containers: every limit enforced by the kernel.

The driver-level suites (``test_cgroups_v1.py``/``test_cgroups_v2.py``) check the
cgroup drivers on processes the test starts itself; these check the engine: a
``ContainerConfig(resources=...)`` reaches the container's cgroup before its command
runs, the kernel enforces it, and the engine reports it (state, events, stats, top)
and removes everything afterwards.

Driver-agnostic: on this (hybrid) host the engine uses the v1 driver; inside the VM
of ``tests/vm/run_engine_v2.sh`` the same tests run against v2, and there
``CODEX32_REQUIRE_V2=1`` turns "no cgroup controllers" into a failure, not a skip.

Timing: every wait is bounded and polls a condition; CPU shares are measured over
1.5 s windows with wide tolerances.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import psutil
import pytest
from helpers import assert_nothing_new, host_tmpdir, root_disk, session_cgroups, snapshot

from codex32 import (
    Container,
    ContainerConfig,
    ContainerEngine,
    ContainerNotFoundError,
    ContainerState,
    DeviceRate,
    IsolationType,
    ResourceLimits,
    Volume,
)
from codex32._cgroups.containers import ContainerCgroups
from codex32._cgroups.driver import CgroupDriver
from codex32._cgroups.fake import ALL_CONTROLLERS, FakeDriver
from codex32._cgroups.v2 import blkio_to_io_weight, shares_to_weight
from codex32._store.events import read_events
from codex32._store.state import ContainerRecord
from codex32.errors import CgroupError

pytestmark = pytest.mark.root

MIB = 1 << 20
BUSYBOX = "busybox"
PYTHON = "python"

MEMORY_HOG = """
chunks = []
while True:
    chunks.append(b"x" * (1 << 20))  # filled bytes: every page is touched and charged
"""

#: Forks until fork fails, keeps every child, prints "FORKED ERRNO", then waits.
FORK_AND_HOLD = """
import os, time
forked, failure = 0, None
for _ in range(100):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = exc.errno
        break
    if pid == 0:
        time.sleep(1000)
        os._exit(0)
    forked += 1
print(forked, failure, flush=True)
time.sleep(1000)
"""

#: PID 1 itself (builtins only, no fork) prints its /proc/self/cgroup: its first action.
PRINT_OWN_CGROUP = 'while read -r line; do echo "$line"; done < /proc/self/cgroup'

#: A counter in a host-visible file, replaced atomically (a reader never sees it empty).
COUNTER = """
import os
i = 0
while True:
    i += 1
    with open("/out/counter.new", "w") as f:
        f.write(str(i))
    os.replace("/out/counter.new", "/out/counter")
"""


# -- helpers --------------------------------------------------------------------------


def _name(what: str) -> str:
    return f"res-{what}-{uuid.uuid4().hex[:8]}"


def _remove(engine: ContainerEngine, name: str) -> None:
    with contextlib.suppress(ContainerNotFoundError):
        engine.containers.get(name).remove(force=True)


@contextlib.contextmanager
def removed_after(engine: ContainerEngine, name: str) -> Iterator[None]:
    """Remove the container called ``name`` (if it exists) however the block ends."""
    try:
        yield
    finally:
        _remove(engine, name)


@contextlib.contextmanager
def detached(engine: ContainerEngine, config: ContainerConfig) -> Iterator[Container]:
    """A running container, removed with force at the end."""
    assert config.name, "give the config a name so that cleanup can find it"
    with removed_after(engine, config.name):
        yield engine.containers.run_detached(config)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def driver_of(engine: ContainerEngine) -> CgroupDriver:
    """The engine's cgroup driver; skip (or fail inside the v2 VM) when there is none."""
    driver = engine._cgroups.driver()
    if driver is None:
        reason = f"no cgroup driver on this host: {engine._cgroups.unavailable}"
        if os.environ.get("CODEX32_REQUIRE_V2") == "1":
            pytest.fail(f"CODEX32_REQUIRE_V2=1 but {reason}")
        pytest.skip(reason)
    return driver


def need(engine: ContainerEngine, *controllers: str) -> CgroupDriver:
    """Skip unless the engine's driver has ``controllers`` (v1 names; v2's freezer is core)."""
    driver = driver_of(engine)
    have = set(driver.controllers())
    if driver.version == "v2":
        have |= {"freezer", "cpuacct"}  # cgroup.freeze and cpu.stat are always there
        if "io" in have:
            have.add("blkio")
    missing = [c for c in controllers if c not in have]
    if missing:
        reason = f"no {', '.join(missing)} controller for containers ({driver.version} driver)"
        if os.environ.get("CODEX32_REQUIRE_V2") == "1":
            pytest.fail(f"CODEX32_REQUIRE_V2=1 but {reason}")
        pytest.skip(reason)
    return driver


def state_of(container: Container) -> ContainerState:
    """The state as last refreshed (a call, so that mypy does not narrow it for good)."""
    return container.state


def is_v2(record: ContainerRecord) -> bool:
    return "unified" in record.cgroup_paths


def cgroup_dir(record: ContainerRecord, controller: str) -> str:
    """The container's directory for ``controller`` (v1), or its unified one (v2)."""
    paths = record.cgroup_paths
    directory = paths.get("unified") or paths.get(controller)
    assert directory, f"the container has no {controller} cgroup: {dict(paths)}"
    return directory


def cgroup_file(record: ContainerRecord, controller: str, filename: str) -> str:
    return Path(cgroup_dir(record, controller), filename).read_text().strip()


def cgroup_pids(record: ContainerRecord) -> list[int]:
    """Every process in the container's cgroup (pids hierarchy on v1)."""
    text = cgroup_file(record, "pids", "cgroup.procs")
    return sorted(int(p) for p in text.split())


def is_frozen(record: ContainerRecord) -> bool:
    if is_v2(record):
        return "frozen 1" in cgroup_file(record, "freezer", "cgroup.events").splitlines()
    return cgroup_file(record, "freezer", "freezer.state") == "FROZEN"


def own_cgroup_lines(text: str) -> dict[str, str]:
    """``/proc/PID/cgroup`` as controller -> path (v2's line under the key "")."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            found[controller] = path
    return found


def processes(pids: list[int]) -> list[psutil.Process]:
    """Handles on live processes (pid + start time, so a reused pid is not mistaken)."""
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


def still_running(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The ones that are neither gone nor zombies."""
    alive = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def names_of(engine: ContainerEngine) -> list[str]:
    return [c.name for c in engine.containers.list(all=True)]


def events_of(engine: ContainerEngine, container_id: str) -> list[tuple[str, dict[str, str]]]:
    path = engine.settings.storage_dir / "events.jsonl"
    if not path.exists():
        return []
    return [
        (e.action, e.attributes) for e in read_events(path, filters={"container": [container_id]})
    ]


@contextlib.contextmanager
def fake_engine(
    engine: ContainerEngine, available: frozenset[str]
) -> Iterator[tuple[ContainerEngine, FakeDriver]]:
    """An engine on the same storage whose cgroups come from a FakeDriver; closed after."""
    fake = FakeDriver(available=available)
    other = ContainerEngine(settings=engine.settings)
    other._cgroups = ContainerCgroups(engine.settings.cgroup_parent, driver=fake)
    try:
        yield other, fake
    finally:
        other.close()


# -- memory -----------------------------------------------------------------------------


def test_memory_hog_is_oom_killed_and_reported(engine: ContainerEngine) -> None:
    need(engine, "memory")
    name = _name("oom")
    limit = 32 * MIB
    config = ContainerConfig(
        name=name,
        image=PYTHON,
        command=["python3", "-c", MEMORY_HOG],
        resources=ResourceLimits(memory_bytes=limit, memory_swap_bytes=limit),
    )
    with removed_after(engine, name):
        result = engine.containers.run(config)
        container = engine.containers.get(name)
        record = container.record
        stats = container.stats()
        assert result.exit_code == 137, result
        assert record.status is ContainerState.EXITED
        assert record.exit_code == 137
        assert record.signal == signal.SIGKILL
        assert record.oom_killed is True
        assert stats.oom_kills >= 1
        assert stats.memory_limit_bytes == limit
        if stats.memory_peak_bytes is not None:
            assert limit // 2 < stats.memory_peak_bytes <= limit
        print(f"oom: exit {result.exit_code}, peak {stats.memory_peak_bytes}, "
              f"oom_kills {stats.oom_kills}")  # fmt: skip
        assert record.oom_kills >= 1 and record.memory_peak_bytes == stats.memory_peak_bytes
        gone(record.cgroup_paths)
        events = events_of(engine, container.id)
        actions = [action for action, _ in events]
        assert "oom" in actions, f"no oom event; the container's events: {events}"
        assert ("die", {"exitCode": "137"}) in events, f"no die 137 event: {events}"
        assert actions.index("oom") < actions.index("die")


def gone(cgroup_paths: dict[str, str]) -> None:
    """The monitor removes an exited container's cgroup (Docker's, runc's), soon."""
    assert cgroup_paths, "the container never had a cgroup"
    left = sorted(set(cgroup_paths.values()))
    wait_for(lambda: not any(os.path.exists(p) for p in left), 5,
             f"the exited container's cgroup to be removed: {left}")  # fmt: skip


def test_an_exited_container_gives_its_cgroup_back_and_keeps_its_figures(
    engine: ContainerEngine,
) -> None:
    """Exit code, OOM kills, peak memory and CPU time stay in the record; the cgroup
    goes, and a start makes it afresh (with its limits) every time."""
    need(engine, "memory")
    name = _name("give-back")
    code = "b = b'x' * (24 << 20); import sys; sys.exit(3)"
    config = ContainerConfig(
        name=name, image=PYTHON, command=["python3", "-c", code],
        resources=ResourceLimits(memory_bytes=64 * MIB, pids_limit=20),
    )  # fmt: skip
    with removed_after(engine, name):
        for run in range(2):
            if run == 0:
                assert engine.containers.run(config).exit_code == 3
            else:
                container = engine.containers.get(name)
                container.start()
                assert container.wait(timeout=30) == 3
            record = engine.containers.get(name).record
            assert record.status is ContainerState.EXITED and record.exit_code == 3
            assert record.oom_killed is False and record.oom_kills == 0
            assert record.memory_peak_bytes is not None and record.memory_peak_bytes > 24 * MIB
            assert record.cpu_usage_ns
            gone(record.cgroup_paths)
            stats = engine.containers.get(name).stats()
            assert (stats.memory_usage_bytes, stats.pids) == (0, 0)
            assert stats.memory_peak_bytes == record.memory_peak_bytes
            assert (stats.memory_limit_bytes, stats.pids_limit) == (64 * MIB, 20)
            print(f"give back, run {run + 1}: peak {record.memory_peak_bytes}, "
                  f"cpu {record.cpu_usage_ns} ns, cgroup removed")  # fmt: skip


def test_memory_limit_is_shown_in_stats_and_a_small_use_is_not_killed(
    engine: ContainerEngine,
) -> None:
    """Below the limit nothing happens: 8 MiB used under 64 MiB, exit 0, no OOM."""
    need(engine, "memory")
    name = _name("mem-ok")
    code = "b = b'x' * (8 << 20); print(len(b))"
    config = ContainerConfig(
        name=name, image=PYTHON, command=["python3", "-c", code],
        resources=ResourceLimits(memory_bytes=64 * MIB, memory_swap_bytes=64 * MIB),
    )  # fmt: skip
    with removed_after(engine, name):
        result = engine.containers.run(config)
        assert (result.exit_code, result.output) == (0, b"8388608\n")
        record = engine.containers.get(name).record
        assert record.oom_killed is False


# -- pids -------------------------------------------------------------------------------


def test_fork_bomb_stops_at_pids_limit(engine: ContainerEngine) -> None:
    """busybox sh forking without end hits pids.max=10: "can't fork" (EAGAIN), host fine."""
    need(engine, "pids")
    name = _name("forkbomb")
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["sh", "-c", "while :; do sleep 1000 & done"],
        resources=ResourceLimits(pids_limit=10),
    )  # fmt: skip
    with removed_after(engine, name):
        result = engine.containers.run(config)
        record = engine.containers.get(name).record
        stderr = result.error_output.decode(errors="replace")
        assert result.exit_code not in (0, 137), result
        assert "can't fork" in stderr, stderr
        assert os.strerror(errno.EAGAIN) in stderr, stderr
        # PID 1 exited, and its pid namespace's sleeps went with it: the cgroup, empty,
        # is removed (pids.max=10 while it runs: test_pids_limit_holds_exactly_ten_processes)
        gone(record.cgroup_paths)
    # The host is fine: we can still fork and run things.
    assert subprocess.run(["true"], check=False, timeout=10).returncode == 0


def test_pids_limit_holds_exactly_ten_processes(engine: ContainerEngine) -> None:
    """A fork loop that keeps its children: 9 forks succeed (PID 1 is the 10th), then EAGAIN."""
    need(engine, "pids")
    config = ContainerConfig(
        name=_name("pids"), image=PYTHON, command=["python3", "-c", FORK_AND_HOLD],
        resources=ResourceLimits(pids_limit=10),
    )  # fmt: skip
    with detached(engine, config) as container:
        wait_for(lambda: bool(container.logs(stderr=False)), 30, "the fork loop's report")
        forked, failure = container.logs(stderr=False).decode().split()
        record = container.record
        stats = container.stats()
        assert (forked, failure) == ("9", str(errno.EAGAIN))
        assert cgroup_file(record, "pids", "pids.max") == "10"
        assert cgroup_file(record, "pids", "pids.current") == "10"
        assert (stats.pids, stats.pids_limit) == (10, 10)
        assert len(container.top()) == 10
        print(f"pids: forked {forked}, then errno {failure}; pids.current {stats.pids}")


OPEN_FILES_PROBE = """
import os
opened = []
try:
    while True:
        opened.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    print(exc.errno, len(opened) + 3)  # + stdin, stdout, stderr
"""


def test_max_open_files_is_the_nofile_rlimit(engine: ContainerEngine) -> None:
    """ResourceLimits.max_open_files: soft and hard RLIMIT_NOFILE; the next open fails."""
    config = ContainerConfig(
        name=_name("nofile"), image=PYTHON, command=["python3", "-S", "-c", OPEN_FILES_PROBE],
        resources=ResourceLimits(max_open_files=40),
    )  # fmt: skip
    with detached(engine, config) as container:
        assert container.wait(timeout=30) == 0, container.logs()
        code, count = container.logs(stderr=False).decode().split()
        assert (int(code), int(count)) == (errno.EMFILE, 40)


# -- cpu --------------------------------------------------------------------------------


def host_idle_seconds() -> float:
    """Idle + iowait time of all CPUs so far (first line of /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def throttled_periods(record: ContainerRecord) -> int:
    """How many CFS periods the quota throttled the container (cpu.stat nr_throttled)."""
    for line in cgroup_file(record, "cpu", "cpu.stat").splitlines():
        key, _, value = line.partition(" ")
        if key == "nr_throttled":
            return int(value)
    return 0


def test_half_a_cpu(engine: ContainerEngine) -> None:
    """cpus=0.5: a busy loop gets about half a core (Container.stats 1.5 s apart).

    The quota is the upper bound: at most 70 % in every window (throttled periods
    are printed, not asserted: on a saturated host the scheduler alone may hold the
    loop under its quota). The lower bound (30 %) shows the loop really ran;
    it needs a free half core, so a window only counts against it when the host
    had idle CPU to give (development hosts run several suites at once). Up to
    five windows; the first at or above 30 % ends the measurement.
    """
    need(engine, "cpu", "cpuacct")
    config = ContainerConfig(
        name=_name("cpu"), image=BUSYBOX, command=["sh", "-c", "while :; do :; done"],
        resources=ResourceLimits(cpus=0.5),
    )  # fmt: skip
    with detached(engine, config) as container:
        time.sleep(0.3)  # past start-up and the first period
        throttled_before = throttled_periods(container.record)
        windows: list[tuple[float, float]] = []  # (cpu %, idle cores of the host)
        for _ in range(5):
            before, idle_before, start = container.stats(), host_idle_seconds(), time.monotonic()
            time.sleep(1.5)
            percent = container.stats().cpu_percent(before)
            idle = (host_idle_seconds() - idle_before) / (time.monotonic() - start)
            windows.append((percent, idle))
            assert percent <= 70, f"busy loop used {percent:.1f}% of a core under cpus=0.5"
            if percent >= 30:
                break
        throttled = throttled_periods(container.record) - throttled_before
    shown = ", ".join(f"{p:.1f}% (host idle {i:.2f} cores)" for p, i in windows)
    print(f"cpu: {shown} under cpus=0.5; {throttled} periods throttled")
    if windows[-1][0] < 30:
        starved = [(p, i) for p, i in windows if i >= 0.5]
        assert not starved, f"the loop got under 30% while the host had idle CPU: {shown}"


def test_cpuset_pins_the_container(engine: ContainerEngine) -> None:
    need(engine, "cpuset")
    name = _name("cpuset")
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["grep", "Cpus_allowed_list", "/proc/self/status"],
        resources=ResourceLimits(cpuset_cpus="0"),
    )  # fmt: skip
    with removed_after(engine, name):
        result = engine.containers.run(config)
        assert result.exit_code == 0, result
        assert result.output.decode().split() == ["Cpus_allowed_list:", "0"]


def test_limits_are_written_to_the_cgroup(engine: ContainerEngine) -> None:
    """Every cgroup limit of ResourceLimits lands in the container's cgroup files."""
    need(engine, "cpu", "cpuset", "memory", "pids")
    limits = ResourceLimits(
        cpus=0.5, cpu_shares=512, cpuset_cpus="0", memory_bytes=64 * MIB,
        memory_swap_bytes=96 * MIB, memory_reservation_bytes=16 * MIB, pids_limit=20,
    )  # fmt: skip
    config = ContainerConfig(
        name=_name("limits"), image=BUSYBOX, command=["sleep", "1000"], resources=limits
    )
    with detached(engine, config) as container:
        record = container.record
        if is_v2(record):
            expected = {
                ("cpu", "cpu.max"): "50000 100000",
                ("cpu", "cpu.weight"): str(shares_to_weight(512)),
                ("cpuset", "cpuset.cpus"): "0",
                ("memory", "memory.max"): str(64 * MIB),
                ("memory", "memory.swap.max"): str(32 * MIB),
                ("memory", "memory.low"): str(16 * MIB),
                ("pids", "pids.max"): "20",
            }
        else:
            expected = {
                ("cpu", "cpu.cfs_quota_us"): "50000",
                ("cpu", "cpu.cfs_period_us"): "100000",
                ("cpu", "cpu.shares"): "512",
                ("cpuset", "cpuset.cpus"): "0",
                ("memory", "memory.limit_in_bytes"): str(64 * MIB),
                ("memory", "memory.memsw.limit_in_bytes"): str(96 * MIB),
                ("memory", "memory.soft_limit_in_bytes"): str(16 * MIB),
                ("pids", "pids.max"): "20",
            }
        found = {key: cgroup_file(record, *key) for key in expected}
        assert found == expected


# -- freezer ----------------------------------------------------------------------------


def test_pause_stops_progress_and_unpause_resumes(engine: ContainerEngine) -> None:
    """A paused counter does not advance; unpaused, it does; stop works while paused.

    (The python template: the VM run then needs no second template built.)
    """
    need(engine, "freezer")
    with host_tmpdir() as out:
        counter = out / "counter"

        def value() -> int:
            return int(counter.read_text()) if counter.exists() else 0

        config = ContainerConfig(
            name=_name("pause"), image=PYTHON, command=["python3", "-c", COUNTER],
            volumes=[Volume(source=str(out), target="/out")],
        )  # fmt: skip
        with detached(engine, config) as container:
            wait_for(lambda: value() > 0, 30, "the counter to start")
            container.pause()
            assert state_of(container) is ContainerState.PAUSED
            assert engine.containers.get(container.id).state is ContainerState.PAUSED
            assert is_frozen(container.record)
            frozen_at = value()
            time.sleep(0.5)
            still = value()
            assert still == frozen_at, f"counter moved from {frozen_at} to {still} while paused"
            container.unpause()
            assert state_of(container) is ContainerState.RUNNING
            assert not is_frozen(container.record)
            wait_for(lambda: value() > still, 30, "the counter to move after unpause")
            print(f"pause: frozen at {frozen_at}, 0.5 s later {still}, resumed to {value()}")

            # stop works on a paused container (the signal is delivered once thawed)
            container.pause()
            assert state_of(container) is ContainerState.PAUSED
            container.stop(timeout=1)
            assert state_of(container) is ContainerState.EXITED, "stop() returned, still paused"
            assert container.record.exit_code == 137  # PID 1 ignores SIGTERM: killed after 1 s
            gone(container.record.cgroup_paths)  # thawed, emptied and removed


# -- stats and top ----------------------------------------------------------------------

STATS_WORKLOAD = """
import subprocess, time
data = b"x" * (8 << 20)
child = subprocess.Popen(["sleep", "1000"])
print("ready", flush=True)
time.sleep(1000)
"""


def test_stats_and_top(engine: ContainerEngine) -> None:
    need(engine, "memory", "pids", "cpuacct")
    limit = 64 * MIB
    config = ContainerConfig(
        name=_name("stats"), image=PYTHON, command=["python3", "-c", STATS_WORKLOAD],
        resources=ResourceLimits(memory_bytes=limit, pids_limit=50),
    )  # fmt: skip
    with detached(engine, config) as container:
        wait_for(lambda: b"ready" in container.logs(), 30, "the workload to be ready")
        stats = container.stats()
        record = container.record
        assert stats.memory_usage_bytes >= 8 * MIB
        assert stats.memory_limit_bytes == limit
        assert stats.cpu_usage_ns > 0
        assert stats.pids >= 2
        assert stats.pids_limit == 50
        assert stats.oom_kills == 0
        for counter in ("net_rx_bytes", "net_tx_bytes", "block_read_bytes", "block_write_bytes"):
            value = getattr(stats, counter)
            assert isinstance(value, int) and value >= 0, (counter, value)
        rows = container.top()
        by_pid = {int(str(row["pid"])): row for row in rows}
        assert record.pid in by_pid, f"PID 1 (host pid {record.pid}) not in top: {rows}"
        assert "python3" in str(by_pid[record.pid]["command"])
        sleeps = [row for row in rows if row["command"] == "sleep 1000"]
        assert len(sleeps) == 1 and sleeps[0]["ppid"] == record.pid, rows
        assert sorted(by_pid) == cgroup_pids(record)
        print(
            f"stats: memory {stats.memory_usage_bytes} / {stats.memory_limit_bytes}, "
            f"pids {stats.pids}/{stats.pids_limit}, cpu {stats.cpu_usage_ns} ns, "
            f"net {stats.net_rx_bytes}/{stats.net_tx_bytes}"
        )


def test_paused_container_stats_and_top(engine: ContainerEngine) -> None:
    """A paused container still answers stats and top (its processes are just frozen)."""
    need(engine, "freezer", "pids")
    config = ContainerConfig(name=_name("pstats"), image=BUSYBOX, command=["sleep", "1000"])
    with detached(engine, config) as container:
        container.pause()
        assert container.stats().pids == 1
        assert [row["pid"] for row in container.top()] == [container.record.pid]


# -- placement and removal --------------------------------------------------------------


def test_command_starts_inside_its_cgroup(engine: ContainerEngine) -> None:
    """The command's first read of /proc/self/cgroup already shows the container's cgroup.

    MINIMAL has no cgroup namespace, so the full path (ending in the container id)
    is visible in the memory and pids hierarchies (v2: the one unified line).
    """
    need(engine, "memory", "pids")
    name = _name("placed")
    config = ContainerConfig(
        name=name, image=BUSYBOX, isolation=IsolationType.MINIMAL,
        command=["sh", "-c", PRINT_OWN_CGROUP],
    )  # fmt: skip
    with removed_after(engine, name):
        result = engine.containers.run(config)
        assert result.exit_code == 0, result
        container = engine.containers.get(name)
        seen = own_cgroup_lines(result.output.decode())
        controllers = [""] if is_v2(container.record) else ["memory", "pids"]
        for controller in controllers:
            path = seen.get(controller, "")
            assert path.endswith(f"/{container.id}"), (
                f"PID 1 started in {controller or 'the unified'} cgroup {path!r}, "
                f"not in the container's: {seen}"
            )
            assert Path(cgroup_dir(container.record, controller or "memory")).name == container.id


def test_cgroup_namespace_is_rooted_at_the_container_cgroup(engine: ContainerEngine) -> None:
    """STANDARD unshares the cgroup namespace after placement: PID 1 sees itself at "/"."""
    need(engine, "memory", "pids")
    name = _name("cgns")
    config = ContainerConfig(name=name, image=BUSYBOX, command=["sh", "-c", PRINT_OWN_CGROUP])
    with removed_after(engine, name):
        result = engine.containers.run(config)
        assert result.exit_code == 0, result
        seen = own_cgroup_lines(result.output.decode())
        controllers = [""] if is_v2(engine.containers.get(name).record) else ["memory", "pids"]
        assert {c: seen.get(c) for c in controllers} == dict.fromkeys(controllers, "/"), seen


def test_exec_joins_the_container_cgroup(engine: ContainerEngine) -> None:
    """A process started with exec_run is limited like the container's command.

    (Docker/runc put exec'd processes in the container's cgroup; otherwise they
    escape its memory and pids limits, stats, top and the kill on remove.)
    """
    need(engine, "memory", "pids")
    config = ContainerConfig(
        name=_name("exec"), image=BUSYBOX, isolation=IsolationType.MINIMAL,
        command=["sleep", "1000"], resources=ResourceLimits(pids_limit=20),
    )  # fmt: skip
    with detached(engine, config) as container:
        result = container.exec_run(["sh", "-c", PRINT_OWN_CGROUP])
        assert result.exit_code == 0, result
        seen = own_cgroup_lines(result.output.decode())
        controllers = [""] if is_v2(container.record) else ["memory", "pids"]
        for controller in controllers:
            path = seen.get(controller, "")
            assert path.endswith(f"/{container.id}"), (
                f"the exec'd process is in {controller or 'the unified'} cgroup {path!r}, "
                f"not in the container's: {seen}"
            )


DOUBLE_FORK = "(setsid sleep 1000 &) ; sleep 1000"


def _double_forked(what: str) -> ContainerConfig:
    return ContainerConfig(name=_name(what), image=BUSYBOX, command=["sh", "-c", DOUBLE_FORK])


def _wait_for_two(container: Container) -> list[psutil.Process]:
    wait_for(lambda: len(cgroup_pids(container.record)) >= 2, 30, "both sleeps to run")
    procs = processes(cgroup_pids(container.record))
    assert len(procs) == 2, procs
    return procs


def test_remove_force_kills_a_double_forked_process(engine: ContainerEngine) -> None:
    need(engine, "pids", "freezer")
    config = _double_forked("rmforce")
    assert config.name is not None
    with removed_after(engine, config.name):
        container = engine.containers.run_detached(config)
        procs = _wait_for_two(container)
        paths = sorted(set(container.record.cgroup_paths.values()))
        container.remove(force=True)
        assert state_of(container) is ContainerState.REMOVED
        assert still_running(procs) == [], "a process survived remove --force"
        assert [p for p in paths if os.path.exists(p)] == [], "cgroup directories left"


def test_stop_kills_a_double_forked_process_and_the_exit_gives_the_cgroup_back(
    engine: ContainerEngine,
) -> None:
    need(engine, "pids", "freezer")
    config = _double_forked("stop")
    with detached(engine, config) as container:
        procs = _wait_for_two(container)
        container.stop(timeout=1)
        assert state_of(container) is ContainerState.EXITED
        wait_for(lambda: not still_running(procs), 10, "every process to die after stop")
        gone(container.record.cgroup_paths)  # as Docker's: a stopped container has none
        container.remove()


def test_auto_remove_deletes_the_cgroup(engine: ContainerEngine) -> None:
    need(engine, "pids")
    name = _name("autorm")
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["true"], auto_remove=True,
        resources=ResourceLimits(pids_limit=20),
    )  # fmt: skip
    with removed_after(engine, name):
        result = engine.containers.run(config)
        left_on_return = name in names_of(engine)
        assert result.exit_code == 0
        driver = driver_of(engine)
        wait_for(lambda: result.container_id not in driver.names(), 30, "the --rm cgroup to go")
        wait_for(lambda: name not in names_of(engine), 30, "the --rm container to go")
        # As docker-py's run(remove=True): once run() returns, the name is free again.
        assert not left_on_return, "containers.run(auto_remove=True) returned before removal"


# -- blkio ------------------------------------------------------------------------------


#: The python template only, as the rest of the v2 VM's selection (one template build).
SLEEPER = ["python3", "-S", "-c", "import time; time.sleep(1000)"]


def test_blkio_weight_is_applied_or_refused_clearly(engine: ContainerEngine) -> None:
    """Both answers of the probe, seen on the file itself (not on the engine's word).

    Weight file present (v2 VM: io.weight): the weight is written. Absent (this host:
    no CFQ, no BFQ): create refuses with one line before any directory, process or
    cgroup exists, and best effort drops the limit with the recorded warning. The v2
    VM run (tests/vm/run_engine_v2.sh) has the file, this host has not: every
    ``make test`` runs both branches.
    """
    need(engine, "blkio")
    probe = ContainerConfig(name=_name("blkio-probe"), image=PYTHON, command=SLEEPER)
    with detached(engine, probe) as container:
        directory = Path(cgroup_dir(container.record, "blkio"))
        if is_v2(container.record):
            names = ["io.bfq.weight", "io.weight"]
        else:
            names = ["blkio.weight", "blkio.bfq.weight"]
        present = [n for n in names if (directory / n).exists()]
    rows = {name: ok for name, ok, _ in engine._cgroups.probe().rows()}
    assert rows["blkio_weight"] is bool(present), f"probe says {rows['blkio_weight']}, {present}"
    config = ContainerConfig(
        name=_name("blkio"), image=PYTHON, command=SLEEPER,
        resources=ResourceLimits(blkio_weight=300),
    )  # fmt: skip
    assert config.name is not None
    with removed_after(engine, config.name):
        if not present:
            storage_dir = engine.settings.storage_dir
            before = snapshot(storage_dir)
            with pytest.raises(CgroupError, match=r"cannot enforce blkio_weight: no ") as caught:
                engine.containers.create(config)
            assert "\n" not in str(caught.value)
            assert_nothing_new(before, storage_dir)
            lenient = config.model_copy(
                update={"resources": ResourceLimits(blkio_weight=300, best_effort=True)}
            )
            container = engine.containers.run_detached(lenient)
            warnings = container.record.warnings
            reason = caught.value.message.split(": ", 1)[1]
            assert [w for w in warnings if w.startswith("blkio_weight is not enforced")] == [
                f"blkio_weight is not enforced (best effort): {reason}"
            ], warnings
            assert container.record.status is ContainerState.RUNNING
            print(f"blkio: refused ({names} absent), best effort ran without it")
            return
        container = engine.containers.run_detached(config)
        text = cgroup_file(container.record, "blkio", present[0])
        expected = blkio_to_io_weight(300) if present[0] == "io.weight" else 300
        assert text.split()[-1] == str(expected), f"{present[0]}: {text!r}"
        print(f"blkio: {present[0]} = {text!r}")


# -- per-device throttling --------------------------------------------------------------

#: 32 blocks of 64 KiB (2 MiB), overwritten in place, then read back, both with direct
#: I/O: cgroup v1 throttles only I/O issued by the cgroup's own tasks, and buffered
#: writes reach the disk from writeback threads outside it. conv=notrunc: the host
#: allocated the blocks, so ext4 does pure direct I/O (no fallback to buffered).
DIRECT_WRITE_READ = (
    "dd if=/dev/zero of=/data/file bs=64k count=32 oflag=direct conv=notrunc && "
    "dd if=/data/file of=/dev/null bs=64k count=32 iflag=direct"
)


def unavailable(reason: str) -> NoReturn:
    """Skip naming what the host lacks (inside the v2 VM: fail, it must have it)."""
    if os.environ.get("CODEX32_REQUIRE_V2") == "1":
        pytest.fail(f"CODEX32_REQUIRE_V2=1 but {reason}")
    pytest.skip(reason)


def host_command(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a host tool in the C locale (dd's report is parsed)."""
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def dd_seconds(report: str) -> list[float]:
    """The times in dd's "N bytes ... copied, 2.00181 s, 1.0 MB/s" lines (GNU or busybox)."""
    return [float(s) for s in re.findall(r"copied, ([0-9.]+) s", report)]


@contextlib.contextmanager
def loop_filesystem(size_mib: int = 32) -> Iterator[tuple[str, Path]]:
    """A loop device over a sparse host file, with ext4 mounted on a host directory.

    Yields (device, mountpoint); unmounts and detaches however the block ends, and
    skips naming what the host lacks (tools, loop devices, ext4).
    """
    missing = [tool for tool in ("losetup", "mkfs.ext4", "mount") if shutil.which(tool) is None]
    if missing:
        unavailable(f"no {', '.join(missing)} here (apt-get install util-linux e2fsprogs)")
    with host_tmpdir() as tmp:
        image = tmp / "disk.img"
        with open(image, "wb") as f:
            f.truncate(size_mib * MIB)
        attach = host_command("losetup", "--find", "--show", str(image))
        if attach.returncode != 0 and not os.path.exists("/dev/loop-control"):
            host_command("modprobe", "loop")
            attach = host_command("losetup", "--find", "--show", str(image))
        if attach.returncode != 0:
            unavailable(f"cannot attach a loop device (losetup): {attach.stderr.strip()}")
        device = attach.stdout.strip()
        mountpoint = tmp / "mnt"
        mountpoint.mkdir()
        mounted = False
        try:
            made = host_command("mkfs.ext4", "-q", "-F", device)
            if made.returncode != 0:
                unavailable(f"mkfs.ext4 on {device} failed: {made.stderr.strip()}")
            mount = host_command("mount", "-t", "ext4", device, str(mountpoint))
            if mount.returncode != 0:
                unavailable(f"cannot mount ext4 from {device}: {mount.stderr.strip()}")
            mounted = True
            yield device, mountpoint
        finally:
            if mounted and host_command("umount", str(mountpoint)).returncode != 0:
                host_command("umount", "-l", str(mountpoint))
            host_command("losetup", "-d", device)


def test_device_write_bps_and_read_iops_throttle_direct_io(engine: ContainerEngine) -> None:
    """write-bps 1mb: 2 MiB of direct writes take ~2 s; read-iops 16: 32 direct reads ~2 s.

    The host first writes the same 2 MiB unthrottled (the baseline, which also
    allocates the file); the container then overwrites and reads it through a volume
    on the loop device's ext4. Lower bounds 1.5 s (blk-throttle lets the first block
    of a slice through at once); the baseline is printed beside them.
    """
    need(engine, "blkio")
    with loop_filesystem() as (device, mountpoint):
        baseline = host_command(
            "dd", "if=/dev/zero", f"of={mountpoint}/file", "bs=64k", "count=32", "oflag=direct"
        )  # fmt: skip
        if baseline.returncode != 0:
            unavailable(f"no direct I/O on ext4 over {device}: {baseline.stderr.strip()}")
        [unthrottled] = dd_seconds(baseline.stderr)
        rdev = os.stat(device).st_rdev
        number = f"{os.major(rdev)}:{os.minor(rdev)}"
        config = ContainerConfig(
            name=_name("throttle"), image=PYTHON,
            # then it stays up, so that its cgroup (removed at the exit) can be read
            command=["sh", "-c", f"{DIRECT_WRITE_READ}; echo status=$? >/data/done; sleep 1000"],
            volumes=[Volume(source=str(mountpoint), target="/data")],
            resources=ResourceLimits(
                device_write_bps=[DeviceRate(path=device, rate=MIB)],
                device_read_iops=[DeviceRate(path=device, rate=16)],
            ),
        )  # fmt: skip
        assert config.name is not None
        with removed_after(engine, config.name):
            container = engine.containers.run_detached(config)
            done = mountpoint / "done"
            wait_for(done.exists, 60, "the throttled dd runs to end")
            record, stats = container.record, container.stats()
            report = container.logs(stdout=False).decode(errors="replace")
            assert done.read_text().strip() == "status=0", report
            write, read = dd_seconds(report)
            if is_v2(record):
                rules = cgroup_file(record, "blkio", "io.max").splitlines()
                line = next((r for r in rules if r.startswith(f"{number} ")), "")
                assert {f"wbps={MIB}", "riops=16"} <= set(line.split()), rules
            else:
                assert cgroup_file(record, "blkio", "blkio.throttle.write_bps_device") == (
                    f"{number} {MIB}"
                )
                assert cgroup_file(record, "blkio", "blkio.throttle.read_iops_device") == (
                    f"{number} 16"
                )
            print(
                f"throttle: {device} ({number}) 2 MiB direct write unthrottled {unthrottled:.3f} s"
                f" (host), at 1mb {write:.2f} s; 32 direct reads at 16 iops {read:.2f} s;"
                f" stats read {stats.block_read_bytes} B, write {stats.block_write_bytes} B"
            )
            assert write >= 1.5, f"2 MiB at 1 MiB/s took {write:.2f} s (unthrottled: {unthrottled})"
            assert write > unthrottled + 1.0
            assert read >= 1.5, f"32 reads at 16 IO/s took {read:.2f} s"
            # stats counts the throttled device's bytes (the blkio/io counters)
            assert stats.block_write_bytes >= 2 * MIB
            assert stats.block_read_bytes >= 2 * MIB


# -- limits the host cannot enforce -----------------------------------------------------


def test_missing_controller_is_an_error_before_anything_is_created(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """pids_limit without a pids controller: CgroupError, no directory, name, cgroup, event."""
    name = _name("nopids")
    before = snapshot(storage_dir)
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["true"], resources=ResourceLimits(pids_limit=10)
    )
    with (
        fake_engine(engine, ALL_CONTROLLERS - {"pids"}) as (other, fake),
        removed_after(engine, name),
    ):
        with pytest.raises(
            CgroupError, match=r"cannot enforce pids_limit: the pids controller is not available"
        ):
            other.containers.run(config)
        with pytest.raises(CgroupError, match=r"pids_limit"):
            other.containers.create(config)
        assert fake.groups == {}
        assert_nothing_new(before, storage_dir)
        path = storage_dir / "events.jsonl"
        if path.exists():
            assert not [e for e in read_events(path) if e.name == name]


def test_memory_swap_without_memory_controller_is_an_error(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """Only --memory alone has a fallback; --memory-swap cannot be done with rlimits."""
    name = _name("noswap")
    before = snapshot(storage_dir)
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["true"],
        resources=ResourceLimits(memory_bytes=64 * MIB, memory_swap_bytes=64 * MIB),
    )  # fmt: skip
    with (
        fake_engine(engine, ALL_CONTROLLERS - {"memory"}) as (other, fake),
        removed_after(engine, name),
    ):
        with pytest.raises(
            CgroupError, match=r"memory_swap_bytes: the memory controller is not available"
        ):
            other.containers.run(config)
        assert fake.groups == {}
        assert_nothing_new(before, storage_dir)


RLIMIT_PROBE = """
limits = [line for line in open("/proc/self/limits") if line.startswith("Max address space")]
print(limits[0].split()[3], limits[0].split()[4])
try:
    block = bytearray(256 << 20)
    print("allocated")
except MemoryError:
    print("MemoryError")
"""


def test_memory_without_memory_controller_falls_back_to_rlimit_as(
    engine: ContainerEngine, caplog: pytest.LogCaptureFixture
) -> None:
    name = _name("rlimit")
    limit = 64 * MIB
    config = ContainerConfig(
        name=name, image=PYTHON, command=["python3", "-c", RLIMIT_PROBE],
        resources=ResourceLimits(memory_bytes=limit),
    )  # fmt: skip
    with fake_engine(engine, ALL_CONTROLLERS - {"memory"}) as (other, fake):
        with removed_after(other, name), caplog.at_level(logging.WARNING, logger="codex32"):
            result = other.containers.run(config)
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert any("no memory cgroup controller" in w for w in warnings), caplog.text
            assert any("RLIMIT_AS" in w for w in warnings), caplog.text
            assert result.exit_code == 0, result
            # "Max address space" soft and hard, then the 256 MiB allocation fails
            assert result.output.decode().split() == [str(limit), str(limit), "MemoryError"]
            assert list(fake.groups) == [result.container_id]  # placed in the (fake) cgroup
        assert fake.groups == {}


def test_best_effort_drops_what_the_host_cannot_enforce_and_says_so(
    engine: ContainerEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """best_effort: a missing controller is a warning (logged, in the record), the
    limit is dropped, and the limits the host can enforce still are."""
    name = _name("besteffort")
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["true"],
        resources=ResourceLimits(pids_limit=10, cpus=0.5, best_effort=True),
    )  # fmt: skip
    with (
        fake_engine(engine, ALL_CONTROLLERS - {"pids"}) as (other, fake),
        removed_after(other, name),
        caplog.at_level(logging.WARNING, logger="codex32"),
    ):
        container = other.containers.create(config)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("pids_limit is not enforced (best effort)" in w for w in warnings)
        assert container.record.warnings == [w for w in warnings if "pids_limit" in w]
        assert container.config.resources.pids_limit is None
        assert container.config.resources.cpus == 0.5
        container.start()
        assert container.wait(timeout=20) == 0
        applied = fake.groups[container.id].limits
        assert applied.cpus == 0.5 and applied.pids_limit is None


def test_a_limit_that_fails_at_start_undoes_the_network_and_the_cgroup(
    engine: ContainerEngine,
) -> None:
    """A throttled device gone between create and start: the start fails cleanly.

    The device is resolved when the limit is applied, after the veth and its shaping
    IFB are made (in parallel with the cgroup placement). The failure is a launch
    error naming the step; the container keeps its record, error and address lease,
    but no cgroup, veth or IFB is left.
    """
    need(engine, "blkio")
    from codex32._network.endpoint import link_exists
    from codex32.errors import LaunchError

    name = _name("gone-device")
    _disk, number = root_disk()
    major, minor = (int(n) for n in number.split(":"))
    with host_tmpdir() as tmp, removed_after(engine, name):
        node = tmp / "disk"
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        config = ContainerConfig(
            name=name, image="busybox", command=["true"], network_egress_rate="1mbit",
            resources=ResourceLimits(device_write_bps=[DeviceRate(path=str(node), rate=MIB)]),
        )  # fmt: skip
        container = engine.containers.create(config)
        node.unlink()
        before = session_cgroups()
        with pytest.raises(LaunchError) as failure:
            container.start()
        assert failure.value.exit_code == 125
        assert str(node) in str(failure.value)
        container.reload()
        assert container.state is not ContainerState.RUNNING
        assert container.record.error
        assert not [c for c in session_cgroups() - before if container.id in c]
        assert not [c for c in session_cgroups() if container.id in c], "cgroup left"
        endpoint = engine._networking.endpoint(container.id)
        assert endpoint is not None and endpoint.ifname_ifb, "the lease and its IFB name stay"
        assert not link_exists(endpoint.ifname_host), "veth left"
        assert not link_exists(endpoint.ifname_ifb), "IFB left"


def test_each_start_gets_a_fresh_cgroup_with_the_configured_limits(
    engine: ContainerEngine,
) -> None:
    """The cgroup of a run goes at its exit (its figures kept in the record); each start
    makes a new one with the config's limits: no counter or rule carries over."""
    need(engine, "pids")
    name = _name("fresh-cgroup")
    config = ContainerConfig(
        name=name, image=BUSYBOX, command=["sleep", "1000"],
        resources=ResourceLimits(pids_limit=10),
    )  # fmt: skip
    with removed_after(engine, name):
        container = engine.containers.create(config)
        for _ in range(2):
            container.start()
            container.reload()
            assert cgroup_file(container.record, "pids", "pids.max") == "10"
            assert cgroup_pids(container.record) == [container.record.pid]
            container.stop(timeout=1)
            container.reload()
            gone(container.record.cgroup_paths)

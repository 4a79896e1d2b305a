"""Many containers at once, started and removed over and over by concurrent callers
(API threads and CLI processes mixed), and restart-policy storms.

``make stress`` runs the full sizes (200 at once, 10 rounds; 50 crashing containers);
``make test`` runs a bounded subset (20 at once, 2 rounds; 10 crashing). Each checks
that every start succeeded, every exit code was recorded, nothing leaked, and
reports time and memory (``load_support.record``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from fault_support import monitors
from helpers import assert_nothing_new, snapshot
from lifecycle_support import eventually
from load_support import mem_used_mib, record, rss_mib, uss_mib

from codex32 import ContainerConfig, ContainerEngine, ContainerNotFoundError, RestartPolicy

pytestmark = pytest.mark.root

LOOP = "trap 'exit 0' TERM; while true; do sleep 1; done"
CLI = str(Path(sys.executable).with_name("codex32"))


def _cli(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEX32_STORAGE_DIR": str(storage)}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def _churn(engine: ContainerEngine, storage: Path, *, at_once: int, rounds: int,
           cli_share: float, threads: int) -> dict[str, object]:  # fmt: skip
    """``rounds`` times: start ``at_once`` containers concurrently (a ``cli_share`` of
    them through CLI processes), check they all run at once, stop them (every exit
    code must be 0: the trap's), remove them."""
    before = snapshot(storage)
    mem_before = mem_used_mib()
    tally = Tally(peaks={"mem": mem_before, "pss": 0.0, "started": 0.0})
    t0 = time.monotonic()
    try:
        _rounds(engine, storage, tally, at_once=at_once, rounds=rounds, cli_share=cli_share,
                threads=threads)  # fmt: skip
    finally:  # a failed round must not leave 200 containers running
        for name in tally.made:
            with contextlib.suppress(ContainerNotFoundError):
                engine.containers.get(name).remove(force=True)
    peaks, codes, round_times = tally.peaks, tally.codes, tally.round_times
    started_total, peak_mem, peak_monitors_mib = peaks["started"], peaks["mem"], peaks["pss"]
    elapsed = time.monotonic() - t0
    assert codes == [0] * (at_once * rounds), sorted(set(codes))
    assert_nothing_new(before, storage)
    return {
        "containers_at_once": at_once, "rounds": rounds, "starts": started_total,
        "exit_codes_recorded": len(codes), "failed_starts": 0, "seconds": round(elapsed, 1),
        "seconds_per_round_max": round(max(round_times), 1),
        "host_mem_before_mib": round(mem_before), "host_mem_peak_mib": round(peak_mem),
        "monitors_pss_mib_at_peak": round(peak_monitors_mib, 1),
        "monitor_pss_kib_each": round(peak_monitors_mib * 1024 / at_once),
        "leaks": 0,
    }  # fmt: skip


@dataclass
class Tally:
    """What the rounds of a churn found."""

    peaks: dict[str, float]
    made: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)
    round_times: list[float] = field(default_factory=list)


def _rounds(engine: ContainerEngine, storage: Path, tally: Tally, *, at_once: int, rounds: int,
            cli_share: float, threads: int) -> None:  # fmt: skip
    failures, codes, peaks = tally.failures, tally.codes, tally.peaks
    for round_no in range(rounds):
        r0 = time.monotonic()
        names = [f"load{round_no}-{i}-{secrets.token_hex(3)}" for i in range(at_once)]
        tally.made += names
        by_cli = set(names[: int(at_once * cli_share)])

        def start(name: str, by_cli: set[str] = by_cli) -> None:
            if name in by_cli:
                done = _cli(storage, "run", "-d", "--name", name, "--network", "none",
                            "busybox", "--", "sh", "-c", LOOP)  # fmt: skip
                if done.returncode != 0:
                    failures.append(f"cli start {name}: {done.stderr.strip()}")
            else:
                try:
                    engine.containers.run_detached(ContainerConfig(
                        image="busybox", name=name, network="none",
                        command=["sh", "-c", LOOP], stop_timeout=5,
                    ))  # fmt: skip
                except Exception as exc:
                    failures.append(f"api start {name}: {exc}")

        _concurrently(threads, start, names)
        running = [c for c in engine.containers.list() if c.name in set(names)]
        peaks["started"] += len(running)
        assert len(running) == at_once, f"round {round_no}: {len(running)} running; {failures}"
        pids = [p for c in running for p in monitors(c.id)]
        peaks["pss"] = max(peaks["pss"], rss_mib(pids))
        peaks["mem"] = max(peaks["mem"], mem_used_mib())

        def stop_and_remove(name: str, by_cli: set[str] = by_cli) -> None:
            try:
                if name in by_cli:
                    done = _cli(storage, "stop", "-t", "5", name)
                    if done.returncode != 0:
                        failures.append(f"cli stop {name}: {done.stderr.strip()}")
                    container = engine.containers.get(name)
                    codes.append(container.wait(timeout=30))
                    done = _cli(storage, "rm", name)
                    if done.returncode != 0:
                        failures.append(f"cli rm {name}: {done.stderr.strip()}")
                else:
                    container = engine.containers.get(name)
                    container.stop(timeout=5)
                    codes.append(container.wait(timeout=30))
                    container.remove()
            except Exception as exc:
                failures.append(f"stop/rm {name}: {type(exc).__name__}: {exc}")

        _concurrently(threads, stop_and_remove, names)
        tally.round_times.append(time.monotonic() - r0)
        assert failures == [], failures[:10]


def _concurrently(threads: int, action: Callable[[str], None], names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(action, names))


def test_churn_bounded(engine: ContainerEngine, storage_dir: Path) -> None:
    figures = _churn(engine, storage_dir, at_once=20, rounds=2, cli_share=0.25, threads=4)
    record("churn-bounded", **figures)


@pytest.mark.stress
def test_churn_full(engine: ContainerEngine, storage_dir: Path) -> None:
    figures = _churn(engine, storage_dir, at_once=200, rounds=10, cli_share=0.2, threads=6)
    record("churn-200x10", **figures)


# -- restart storms ----------------------------------------------------------------


def _storm(engine: ContainerEngine, storage: Path, *, crashers: int, seconds: float) -> None:
    """``crashers`` containers that fail 100 ms after each start (``--restart always``)
    beside 3 steady ones that tick every 50 ms: the steady ones are not starved (no
    tick gap over 2 s), the engine's and the steady monitors' private memory (USS) does
    not grow from the first half to the second, no crasher piles up monitors (two only
    during a restart's hand-over), and a new container still starts."""
    before = snapshot(storage)
    storm = [engine.containers.run_detached(ContainerConfig(
        image="busybox", name=f"storm-{i}-{secrets.token_hex(3)}", network="none",
        command=["sh", "-c", "sleep 0.1; exit 1"], restart_policy=RestartPolicy(name="always"),
    )) for i in range(crashers)]  # fmt: skip
    # The host's uptime clock (STANDARD has no time namespace); busybox date has no %N.
    ticker = "while true; do cut -d' ' -f1 /proc/uptime; usleep 50000; done"
    steady = [engine.containers.run_detached(ContainerConfig(
        image="busybox", name=f"steady-{i}-{secrets.token_hex(3)}", network="none",
        command=["sh", "-c", ticker], log_max_size=1 << 20,
    )) for i in range(3)]  # fmt: skip
    samples: list[float] = []
    engine_samples: list[float] = []
    doubled: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            # Ours only (the host's total moves with whatever else runs on the machine):
            # this engine process, and the steady containers' monitors, the same
            # processes all along (a crasher's monitor lives 100 ms; restarted ones are
            # fresh interpreters, so a mean over them would measure the mix, not a leak).
            engine_samples.append(uss_mib([os.getpid()]))
            samples.append(uss_mib([p for c in steady for p in monitors(c.id)]))
            # Two for a moment is the hand-over (the old monitor waits for the restart
            # process, which starts the new one); three would be one left behind.
            doubled.extend(c.id for c in storm if len(monitors(c.id)) > 2)

    sampler = threading.Thread(target=sample)
    t0 = _uptime()
    sampler.start()
    try:
        time.sleep(seconds / 2)
        probe_start = time.monotonic()
        probe = engine.containers.run(ContainerConfig(
            image="busybox", command=["true"], network="none", auto_remove=True))  # fmt: skip
        probe_seconds = time.monotonic() - probe_start
        time.sleep(seconds / 2)
    finally:
        stop.set()
        sampler.join()
    restarts = 0
    try:
        assert probe.exit_code == 0
        gaps = []
        for c in steady:
            ticks = [float(x) for x in c.logs().decode().split() if x[:1].isdigit()]
            ticks = [t for t in ticks if t >= t0]
            gaps.append(max(b - a for a, b in itertools.pairwise(ticks)))
        for c in storm:
            c.reload()
            restarts += c.record.restart_count
        growth, engine_growth = _growth(samples), _growth(engine_samples)
        record(f"restart-storm-{crashers}", crashers=crashers, seconds=seconds,
               restarts=restarts, max_tick_gap_s=round(max(gaps), 2),
               new_container_start_s=round(probe_seconds, 2),
               steady_monitors_uss_growth_mib=round(growth, 2),
               engine_uss_growth_mib=round(engine_growth, 1),
               double_monitors=len(doubled))  # fmt: skip
        assert max(gaps) < 2.0, f"a steady container was starved for {max(gaps):.2f} s"
        assert not doubled, f"containers with 3+ monitors: {sorted(set(doubled))[:5]}"
        for c in storm:  # and the old monitor goes once the hand-over is done
            assert eventually(partial(_one_monitor_at_most, c.id), 10), c.id
        assert growth < 1, f"the steady containers' monitors grew by {growth:.1f} MiB"
        assert engine_growth < 20, f"the engine grew by {engine_growth:.0f} MiB"
        assert restarts >= crashers, "the storm did not restart"
    finally:
        for c in storm + steady:
            with contextlib.suppress(ContainerNotFoundError):
                c.remove(force=True)
    assert_nothing_new(before, storage)


def _growth(samples: list[float]) -> float:
    """The second half's mean minus the first half's."""
    half = len(samples) // 2
    return sum(samples[half:]) / max(1, len(samples) - half) - sum(samples[:half]) / max(1, half)


def _one_monitor_at_most(container_id: str) -> bool:
    return len(monitors(container_id)) <= 1


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def test_restart_storm_bounded(engine: ContainerEngine, storage_dir: Path) -> None:
    _storm(engine, storage_dir, crashers=10, seconds=8)


@pytest.mark.stress
def test_restart_storm_full(engine: ContainerEngine, storage_dir: Path) -> None:
    _storm(engine, storage_dir, crashers=50, seconds=30)

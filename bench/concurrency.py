"""N containers of ``sleep 1`` started at once: Codex-32's API (threads) and crun.

Codex-32: N threads wait on a barrier, then each calls ``containers.run_detached``
(which returns once the command runs) and waits on a pidfd of its PID 1. crun: the
timing server inside crun's cgroup namespace starts N ``crun run --detach`` at once
and waits on each container's pid (``--pid-file``), then the N ``crun delete`` run
at once. Times are from the release of the barrier (the first spawn for crun) to the
last container running, the last exited and (for both) the last removed.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .env import Bench
from .stats import Summary, ns_to_ms

SLEEP = ["sleep", "1"]
API = "codex32 API"
API_NONET = "codex32 API, network none"


@dataclass
class Series:
    """One runtime at one N, over the repeats."""

    runtime: str
    n: int
    running: list[int] = field(default_factory=list)
    exited: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def summaries(self) -> dict[str, Summary | None]:
        return {
            "running": Summary.of(ns_to_ms(self.running)),
            "exited": Summary.of(ns_to_ms(self.exited)),
            "removed": Summary.of(ns_to_ms(self.removed)),
        }


def _wait_pid(pid: int | None) -> int:
    if not pid:
        return time.monotonic_ns()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return time.monotonic_ns()
    try:
        select.select([fd], [], [], 60)
        return time.monotonic_ns()
    finally:
        os.close(fd)


def api_once(
    bench: Bench, engine: Any, n: int, series: Series, extra: dict[str, Any] | None = None
) -> None:
    from codex32 import ContainerConfig

    barrier = threading.Barrier(n + 1)
    running = [0] * n
    exited = [0] * n
    errors: list[str] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            config = ContainerConfig(
                image="busybox", command=SLEEP, auto_remove=True, **(extra or {})
            )
            container = engine.containers.run_detached(config)
            running[i] = time.monotonic_ns()
            exited[i] = _wait_pid(container.record.pid)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.monotonic_ns()
    for thread in threads:
        thread.join(120)
    removed = bench.wait_removed(timeout=180)
    if errors:
        series.failures.append(f"{len(errors)}/{n} failed: {errors[0]}")
        return
    series.running.append(max(running) - start)
    series.exited.append(max(exited) - start)
    if removed is not None:
        series.removed.append(removed - start)


def crun_once(bench: Bench, n: int, series: Series, bundles: list[str]) -> None:
    assert bench.ns is not None
    ids = [bench.next_id(f"conc{n}") for _ in range(n)]
    pidfiles = [str(bench.tmp / f"{cid}.pid") for cid in ids]
    argvs = [
        bench.crun_argv("run", "--detach", "--pid-file", pidfile, "--bundle", bundle, cid)
        for cid, pidfile, bundle in zip(ids, pidfiles, bundles[:n], strict=True)
    ]
    reply = bench.ns.batch(argvs, pidfiles, timeout=60)
    deleted = bench.ns.batch([bench.crun_argv("delete", cid) for cid in ids])
    for path in pidfiles:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if any(reply["rcs"]) or any(deleted["rcs"]):
        series.failures.append(f"crun failed: {(reply['err'] or deleted['err']).strip()[-300:]}")
        return
    start = reply["start"]
    series.running.append(max(reply["returned"]) - start)
    series.exited.append(max(reply["exited"]) - start)
    series.removed.append(max(deleted["returned"]) - start)


def measure(
    bench: Bench, sizes: list[int], repeats: int, log: Callable[[str], None]
) -> list[Series]:
    engine = bench.engine()
    # Warm the engine (imports, fork server, seccomp cache) and crun's page cache.
    warm = Series("warm-up", 1)
    api_once(bench, engine, 1, warm)
    bundles = [str(bench.bundle(f"conc-{i}", SLEEP)) for i in range(max(sizes))]
    crun_once(bench, 1, warm, bundles)
    if warm.failures:
        log(f"concurrency warm-up failed: {warm.failures}")
    nonet = bench.supports_network_option()
    found = []
    for n in sizes:
        api = Series(API, n)
        api_nonet = Series(API_NONET, n)
        crun = Series("crun", n)
        steps: list[tuple[Series, dict[str, Any] | None]] = [(api, None), (crun, None)]
        if nonet:
            steps.append((api_nonet, {"network": "none"}))
        for r in range(repeats):
            # Rotate the order, so that no series always follows the same one's tail.
            for series, extra in steps[r % len(steps) :] + steps[: r % len(steps)]:
                if series is crun:
                    crun_once(bench, n, crun, bundles)
                else:
                    api_once(bench, engine, n, series, extra)
        log(f"concurrency: N={n} done")
        found += [s for s, _ in steps]
    return found


def to_dict(found: list[Series]) -> list[dict[str, Any]]:
    out = []
    for s in found:
        entry: dict[str, Any] = {"runtime": s.runtime, "n": s.n, "failures": s.failures}
        for key, summary in s.summaries().items():
            entry[key] = summary.to_dict() if summary else None
        out.append(entry)
    return out

"""Flat costs as work grows: the verbs' cost with 0, 100, 500 containers running.

At each count N the bench has N containers of ``sleep`` running on the default bridge
(started through the API, 10 at a time, not timed), plus one probe container, and times
through the API (medians of a few runs):

* ``start``: ``containers.run(/bin/true)`` with ``--rm`` on the default bridge (until
  removed, as ``run`` returns);
* ``stop``: ``stop()`` of a running container that exits on SIGTERM (started first,
  removed after, neither timed);
* ``ps``: ``containers.list()`` (N + 1 running);
* ``inspect``: what ``codex32 inspect`` reads: ``containers.get(id)``, its record,
  config and network settings;
* ``stats``: ``stats()`` of the probe container.

It also records the engine process's USS at each count. Everything runs in the bench's
own network namespace (``host.private_network``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psutil

from . import memory
from .env import Bench
from .stats import Summary

OPS = ("start", "stop", "ps", "inspect", "stats")
#: PID 1 that exits on SIGTERM (busybox ``sleep`` as PID 1 ignores it).
TERMINABLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


def _timed(call: Callable[[], object]) -> float:
    start = time.monotonic_ns()
    call()
    return (time.monotonic_ns() - start) / 1e6


def _stopper(container: Any) -> Callable[[], object]:
    return lambda: container.stop(timeout=10)


def _ops(engine: Any, probe: Any, reps: int) -> dict[str, list[float]]:
    from codex32 import ContainerConfig

    found: dict[str, list[float]] = {op: [] for op in OPS}
    for _ in range(reps):
        config = ContainerConfig(image="busybox", command=["/bin/true"], auto_remove=True)
        found["start"].append(_timed(partial(engine.containers.run, config)))
        victim = engine.containers.run_detached(ContainerConfig(image="busybox",
                                                                command=TERMINABLE))  # fmt: skip
        time.sleep(0.05)  # the trap is set
        found["stop"].append(_timed(_stopper(victim)))
        victim.remove(force=True)
        found["ps"].append(_timed(engine.containers.list))

        def inspect() -> None:
            c = engine.containers.get(probe.id)
            c.record.to_dict()
            c.config.model_dump(mode="json")
            c.network_settings()

        found["inspect"].append(_timed(inspect))
        found["stats"].append(_timed(probe.stats))
    return found


def measure(
    bench: Bench, counts: list[int], reps: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """One point per count: medians (min-max) of each operation, and the engine's USS."""
    from codex32 import ContainerConfig

    engine = bench.engine()
    probe = engine.containers.run_detached(ContainerConfig(image="busybox",
                                                           command=memory.SLEEP))  # fmt: skip
    _ops(engine, probe, 1)  # warm-up: imports, the fork server, caches
    running: list[Any] = []
    points = []
    try:
        for n in sorted(counts):
            started, errors = memory._start(engine, n - len(running))
            running += started
            if errors:
                log(f"scale: {len(errors)} starts failed: {errors[0]}")
            time.sleep(1.0)  # let the last starts' background work settle
            samples = _ops(engine, probe, reps)
            ops = {}
            for op, values in samples.items():
                summary = Summary.of(values)
                ops[op] = summary.to_dict() if summary else None
            uss = int(psutil.Process().memory_full_info().uss)
            points.append({"running": len(running), "ops": ops, "engine_uss": uss,
                           "failures": errors[:3]})  # fmt: skip
            log(f"scale: {len(running)} running: " + ", ".join(
                f"{op} {statistics.median(v):.1f} ms" for op, v in samples.items()))  # fmt: skip
    finally:
        for container in [*running, probe]:
            with contextlib.suppress(Exception):
                container.kill()
        with contextlib.suppress(Exception):
            probe.remove(force=True)
        if bench.wait_removed(timeout=300) is None:
            for container in running:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
    return points

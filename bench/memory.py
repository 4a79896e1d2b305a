"""Engine-side memory per running container, for 1, 10 and 50 containers.

The containers run ``sleep`` and are started through the API (``run_detached``) by
threads, one by one with the CLI (``codex32 run -d``), or through the host service's
REST API (``POST /containers?start=true``) by threads; the counts are reached by
adding containers (1, then 9 more, then 40 more). At each count the bench reads, with psutil:

* every container's monitor (``record.monitor_pid``): USS, PSS, RSS;
* the engine's helper processes (its children running ``codex32.*``, such as the
  fork server): one per engine, shared by all containers;
* the engine process itself (the bench's, or the service's): its USS growth since
  before the first container.

The container's own processes (``sleep``) are not the engine's and not counted.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from .env import Bench
from .service import HostService

SLEEP = ["sleep", "600"]


@dataclass
class Sample:
    """The memory at one number of running containers (bytes)."""

    n: int
    mode: str
    monitor_uss: list[int] = field(default_factory=list)
    monitor_pss: list[int] = field(default_factory=list)
    monitor_rss: list[int] = field(default_factory=list)
    helpers_uss: int = 0
    helpers_pss: int = 0
    helpers: list[str] = field(default_factory=list)
    engine_uss_growth: int = 0

    def per_container_uss(self) -> float:
        """Monitors' USS + the helpers' and the engine's growth shared out, per container."""
        total = sum(self.monitor_uss) + self.helpers_uss + max(self.engine_uss_growth, 0)
        return total / self.n

    def per_container_pss(self) -> float:
        total = sum(self.monitor_pss) + self.helpers_pss + max(self.engine_uss_growth, 0)
        return total / self.n

    def to_dict(self) -> dict[str, Any]:
        def med(values: list[int]) -> float | None:
            return statistics.median(values) if values else None

        return {
            "n": self.n,
            "mode": self.mode,
            "monitor_uss_median": med(self.monitor_uss),
            "monitor_pss_median": med(self.monitor_pss),
            "monitor_rss_median": med(self.monitor_rss),
            "helpers_uss": self.helpers_uss,
            "helpers_pss": self.helpers_pss,
            "helpers": self.helpers,
            "engine_uss_growth": self.engine_uss_growth,
            "per_container_uss": self.per_container_uss(),
            "per_container_pss": self.per_container_pss(),
        }


def _uss(pid: int | None = None) -> int:
    return int(psutil.Process(pid).memory_full_info().uss)


def _helpers(ignore: set[int], engine_pid: int | None = None) -> list[psutil.Process]:
    """The engine's own long-lived children (the fork server), not the bench's; the
    engine is the bench process, or the host service's."""
    found = []
    for child in psutil.Process(engine_pid).children(recursive=False):
        try:
            if child.pid not in ignore and any(a.startswith("codex32.") for a in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def _ten_at_a_time(start_one: Callable[[], Any], count: int) -> tuple[list[Any], list[str]]:
    """``count`` calls of ``start_one``, at most 10 at a time (a start is not what is
    measured here); what they returned, and the errors."""
    started: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            result = start_one()
            with lock:
                started.append(result)
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")

    for first in range(0, count, 10):
        threads = [threading.Thread(target=worker) for _ in range(min(10, count - first))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    return started, errors


def _start(engine: Any, count: int) -> tuple[list[Any], list[str]]:
    from codex32 import ContainerConfig

    config = ContainerConfig(image="busybox", command=SLEEP, auto_remove=True)
    return _ten_at_a_time(lambda: engine.containers.run_detached(config), count)


def _start_cli(engine: Any, count: int) -> tuple[list[Any], list[str]]:
    """``count`` containers started one by one with ``codex32 run -d --rm`` (as a user
    would): each monitor is the CLI's once-server, not a child of a shared one."""
    import subprocess

    from .host import REPO

    started: list[Any] = []
    errors: list[str] = []
    for _ in range(count):
        proc = subprocess.run(
            [str(REPO / ".venv/bin/codex32"), "run", "-d", "--rm", "busybox", *SLEEP],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            errors.append(proc.stderr.strip())
            continue
        started.append(engine.containers.get(proc.stdout.strip()))
    return started, errors


def _start_service(service: HostService) -> Callable[[Any, int], tuple[list[Any], list[str]]]:
    """Starts through the host service's REST API (``POST /containers?start=true``, as
    ``docker run -d`` through dockerd), 10 at a time; handles from the bench's engine
    on the same storage, to read the records."""

    def start(engine: Any, count: int) -> tuple[list[Any], list[str]]:
        config = {"image": "busybox", "command": SLEEP, "auto_remove": True}
        ids, errors = _ten_at_a_time(lambda: service.run_detached(config), count)
        return [engine.containers.get(i) for i in ids], errors

    return start


def _sample(
    n: int,
    mode: str,
    containers: list[Any],
    baseline_uss: int,
    ignore: set[int],
    engine_pid: int | None = None,
) -> Sample:
    sample = Sample(n, mode)
    for container in containers:
        container.reload()
        pid = container.record.monitor_pid
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.Error, ValueError, TypeError):
            continue
        sample.monitor_uss.append(int(info.uss))
        sample.monitor_pss.append(int(info.pss))
        sample.monitor_rss.append(int(info.rss))
    for helper in _helpers(ignore, engine_pid):
        try:
            info = helper.memory_full_info()
            sample.helpers_uss += int(info.uss)
            sample.helpers_pss += int(info.pss)
            sample.helpers.append(" ".join(helper.cmdline()[1:4]))
        except psutil.Error:
            continue
    sample.engine_uss_growth = _uss(engine_pid) - baseline_uss
    return sample


def measure(
    bench: Bench,
    counts: list[int],
    log: Callable[[str], None],
    *,
    fork_server: bool = True,
    via_cli: bool = False,
    via_service: HostService | None = None,
) -> list[Sample]:
    """Memory at each count: monitors forked by the engine's fork server, fresh
    interpreters (``fork_server=False``), started by the CLI (``via_cli``), or through
    the host service (``via_service``: its process is the engine, its fork server the
    helper)."""
    engine_pid = None
    if via_service is not None:
        mode = "host service (REST `POST /containers?start=true`, its fork server)"
        start = _start_service(via_service)
        engine_pid = via_service.pid
    elif via_cli:
        mode = "CLI `run -d` (once-server)"
        start = _start_cli
    else:
        mode = "fork server" if fork_server else "fresh interpreter (fork_server=False)"
        start = _start
    # Other engines' helpers, if any are left (the service's own are its, and count).
    others = {p.pid for p in _helpers(set())} if via_service is None else set()
    engine = bench.engine(fork_server=fork_server)
    # A first container starts the fork server and imports what a start needs; it is
    # removed again so that the baseline is a warm engine with no container.
    warm, errors = start(engine, 1)
    for container in warm:
        container.remove(force=True)
    if errors:
        raise RuntimeError(f"could not start a container: {errors[0]}")
    bench.wait_removed()
    baseline = _uss(engine_pid)
    containers: list[Any] = []
    samples = []
    try:
        for n in sorted(counts):
            started, errors = start(engine, n - len(containers))
            containers += started
            if errors:
                log(f"memory: {len(errors)} starts failed: {errors[0]}")
            sample = _sample(len(containers), mode, containers, baseline, others, engine_pid)
            if via_cli:
                sample.engine_uss_growth = 0  # the bench's engine only reads their records
            samples.append(sample)
            log(f"memory ({mode}): {len(containers)} running, monitor USS median "
                f"{statistics.median(sample.monitor_uss or [0]) / 1e6:.2f} MB")  # fmt: skip
    finally:
        # They are --rm containers: kill them and let their monitors remove them
        # (``remove(force=True)`` at the same time races with the monitor's removal).
        for container in containers:
            try:
                container.kill()
            except Exception as exc:
                log(f"memory: could not kill {container.id[:12]}: {exc}")
        if bench.wait_removed(timeout=120) is None:
            for container in containers:
                with contextlib.suppress(Exception):
                    container.remove(force=True)
    return samples

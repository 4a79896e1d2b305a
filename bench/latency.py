"""Start-to-exit latency of ``/bin/true``: Codex-32 beside crun, runc, bwrap and floors.

Every variant runs in every round, in a shuffled order, so that the machine's noise
falls on all of them alike. Per round and variant:

* warm: two runs back to back, the second recorded (the first warms caches and the
  kernel's cgroup-attach fast path);
* idle: 50 ms of sleep, then one recorded run (attaching a process to a cgroup after
  idle waits for an RCU grace period on this kernel).

Codex-32's ``--rm`` containers are removed by their monitor (the engine may return
before that is done: it did until c145139). In a warm pair the second run starts as
soon as the first returned, as in a caller's loop; after each pair and each idle run
the bench waits until the storage holds no container, so that no removal runs into
another variant's measurement, and reports when the idle run's removal ended. crun and
runc remove their container before they return.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import host
from .env import Bench, Spawner, Timed
from .service import HostService
from .stats import Summary, ns_to_ms

IDLE = 0.05
MODES = ("warm", "idle")


@dataclass
class Variant:
    """One way of running /bin/true."""

    key: str
    label: str
    interpreter: str
    # API variants: a call returning (start_ns, end_ns); command variants: argv factory.
    call: Callable[[], tuple[int, int]] | None = None
    argv: Callable[[], list[str]] | None = None
    spawner: Spawner | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to the command's environment
    codex32: bool = False  # wait for (and record) the container's removal
    samples: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MODES})
    removed: dict[str, list[int]] = field(default_factory=lambda: {m: [] for m in MODES})
    failures: list[str] = field(default_factory=list)

    def summary(self, mode: str) -> Summary | None:
        return Summary.of(ns_to_ms(self.samples[mode]))

    def removed_summary(self, mode: str) -> Summary | None:
        return Summary.of(ns_to_ms(self.removed[mode]))


def _api_call(engine: Any, **extra: Any) -> Callable[[], tuple[int, int]]:
    from codex32 import ContainerConfig

    def call() -> tuple[int, int]:
        start = time.monotonic_ns()
        config = ContainerConfig(image="busybox", command=["/bin/true"], auto_remove=True, **extra)
        result = engine.containers.run(config)
        end = time.monotonic_ns()
        if result.exit_code != 0:
            raise RuntimeError(f"exit code {result.exit_code}: {result.error_output[-300:]!r}")
        return start, end

    return call


def _pool_variant(bench: Bench, key: str, venv: str, extra: dict[str, Any]) -> Variant:
    """The API with a sandbox pool of 2: each recorded run is a pool hit (counted).

    Before a run that would find the pool empty the call waits for the refill, off
    the clock (a caller's pause between starts); a back-to-back pair takes both
    sandboxes, as a burst of two would.
    """
    engine = bench.engine(sandbox_pool=2)
    pool = engine._pool
    what = "network none, " if extra else ""
    variant = Variant(key, f"Codex-32 API, {what}sandbox pool hit (`sandbox_pool=2`)", "")
    plain = _api_call(engine, **extra)
    counts = {"hits": 0, "runs": 0}

    def call() -> tuple[int, int]:
        if not any(pool.ready().values()):
            pool.wait_ready(5)
        hits = pool.hits
        timed = plain()
        counts["runs"] += 1
        counts["hits"] += pool.hits - hits
        variant.interpreter = (
            f"{venv} (engine); sandboxes made by the fork server; pool hits: "
            f"{counts['hits']} of {counts['runs']} runs (warm-up included)"
        )
        return timed

    variant.call = call
    variant.codex32 = True
    return variant


def _service_call(service: HostService, **extra: Any) -> Callable[[], tuple[int, int]]:
    def call() -> tuple[int, int]:
        start = time.monotonic_ns()
        config = {"image": "busybox", "command": ["/bin/true"], "auto_remove": True, **extra}
        answer = service.run(config)
        end = time.monotonic_ns()
        if answer["exit_code"] != 0:
            raise RuntimeError(f"exit code {answer['exit_code']}: {answer!r:.300}")
        return start, end

    return call


def _service_variants(bench: Bench, venv: str) -> list[Variant]:
    """The CLI through the host service (``--host``), and its REST API called directly."""
    service = bench.service
    if service is None:
        return []
    codex32 = str(host.REPO / ".venv/bin/codex32")
    # The service keeps its default sandbox pool (2 per shape): its starts are pool hits.
    served = "`codex32 serve` (engine with its fork server and sandbox pool, 2 per shape)"
    return [
        Variant("cli-host", "Codex-32 CLI through the host service `codex32 --host unix://... "
                "run --rm busybox /bin/true`", f"{codex32} ({venv}, with site) -> {served}",
                argv=lambda: [codex32, "--host", service.url, "run", "--rm", "busybox",
                              "/bin/true"],
                spawner=bench.host, codex32=True),
        Variant("cli-host-nonet", "Codex-32 CLI through the host service, `--network none`",
                f"{codex32} ({venv}, with site) -> {served}",
                argv=lambda: [codex32, "--host", service.url, "run", "--rm", "--network",
                              "none", "busybox", "/bin/true"],
                spawner=bench.host, codex32=True),
        Variant("svc-api", "Codex-32 host service REST `POST /containers/run` (`--rm`), "
                "from the bench process", f"http.client in the bench process -> {served}",
                call=_service_call(service), codex32=True),
    ]  # fmt: skip


def variants(bench: Bench) -> list[Variant]:
    """Every variant this host can run (a missing runc or bwrap is left out)."""
    assert bench.host is not None and bench.ns is not None
    venv = str(host.VENV_PYTHON)
    found = [
        Variant("api", "Codex-32 API, warm process (`containers.run`)",
                f"{venv} (engine); monitors forked by the engine's fork server"
                if bench.supports_fork_server() else f"{venv}; `{venv} -S` per monitor",
                call=_api_call(bench.engine()), codex32=True),
    ]  # fmt: skip
    if bench.supports_network_option():
        found.append(
            Variant("api-nonet", "Codex-32 API, `network=\"none\"` (loopback only, as crun)",
                    found[0].interpreter, call=_api_call(bench.engine(), network="none"),
                    codex32=True)
        )  # fmt: skip
    if bench.supports_sandbox_pool():
        for key, extra in (("api-pool", {}), ("api-pool-nonet", {"network": "none"})):
            found.append(_pool_variant(bench, key, venv, extra))
    if bench.supports_fork_server():
        found.append(
            Variant("api-nofs", "Codex-32 API, `fork_server=False`",
                    f"{venv} (engine); a fresh `{venv} -S` per monitor",
                    call=_api_call(bench.engine(fork_server=False)), codex32=True)
        )  # fmt: skip
    found.append(
        Variant("cli", "Codex-32 CLI `codex32 run --rm busybox /bin/true`",
                f"{host.REPO}/.venv/bin/codex32 ({venv}, with site)",
                argv=lambda: [str(host.REPO / ".venv/bin/codex32"), "run", "--rm", "busybox",
                              "/bin/true"],
                spawner=bench.host, codex32=True)
    )  # fmt: skip
    found.append(
        Variant("cli-nonet", "Codex-32 CLI `codex32 run --rm --network none busybox /bin/true`",
                found[-1].interpreter,
                argv=lambda: [str(host.REPO / ".venv/bin/codex32"), "run", "--rm", "--network",
                              "none", "busybox", "/bin/true"],
                spawner=bench.host, codex32=True)
    )  # fmt: skip
    found += _service_variants(bench, venv)
    for anchor in (bench.podman, bench.docker):
        if anchor is not None:
            found.append(
                Variant(anchor.key, f"{anchor.key} `run --rm --network none` (runc)", "-",
                        argv=lambda a=anchor: a.run_argv("/bin/true"),  # type: ignore[misc]
                        spawner=bench.host)
            )  # fmt: skip
    crun_bundle = str(bench.bundle("crun", ["/bin/true"]))
    crun_plain = str(bench.bundle("crun-noseccomp", ["/bin/true"], seccomp=False))
    found += [
        Variant("crun", "crun run (seccomp as STANDARD)", "-",
                argv=lambda: bench.crun_argv("run", "--bundle", crun_bundle,
                                             bench.next_id("crun")),
                spawner=bench.ns),
        Variant("crun-noseccomp", "crun run, no seccomp", "-",
                argv=lambda: bench.crun_argv("run", "--bundle", crun_plain,
                                             bench.next_id("crunp")),
                spawner=bench.ns),
    ]  # fmt: skip
    if bench.runc:
        runc_bundle = str(bench.bundle("runc", ["/bin/true"]))
        found.append(
            Variant("runc", "runc run (seccomp as STANDARD)", "-",
                    argv=lambda: bench.runc_argv("run", "--bundle", runc_bundle,
                                                 bench.next_id("runc")),
                    spawner=bench.host)
        )  # fmt: skip
    if bench.bwrap:
        bwrap = bench.bwrap
        found.append(
            Variant("bwrap", "bwrap --unshare-all (no cgroup, no seccomp)", "-",
                    argv=lambda: [bwrap, "--unshare-all", "--ro-bind", bench.rootfs, "/",
                                  "--proc", "/proc", "--dev", "/dev", "/bin/true"],
                    spawner=bench.host)
        )  # fmt: skip
    monitor_import = "import codex32._runtime.monitor"
    found += [
        Variant("true", "floor: fork+exec /bin/true", "-",
                argv=lambda: ["/bin/true"], spawner=bench.host),
        Variant("py-system", "floor: `/usr/bin/python3 -S -c pass`", str(host.SYSTEM_PYTHON),
                argv=lambda: [str(host.SYSTEM_PYTHON), "-S", "-c", "pass"], spawner=bench.host),
        Variant("py-venv", "floor: `.venv/bin/python -S -c pass`", venv,
                argv=lambda: [venv, "-S", "-c", "pass"], spawner=bench.host),
        Variant("py-venv-site", "floor: `.venv/bin/python -c pass` (site, as the CLI)", venv,
                argv=lambda: [venv, "-c", "pass"], spawner=bench.host),
        Variant("py-monitor", f"floor: `.venv/bin/python -S -c '{monitor_import}'`", venv,
                argv=lambda: [venv, "-S", "-c", monitor_import], spawner=bench.host,
                env={"PYTHONPATH": str(host.REPO)}),
    ]  # fmt: skip
    return found


def _run_command(variant: Variant, idle: float, count: int) -> list[Timed]:
    """``count`` runs; the server sleeps ``idle`` before the first only."""
    assert variant.argv is not None and variant.spawner is not None
    runs = variant.spawner.run([variant.argv()], idle, variant.env)
    if count > 1:
        runs += variant.spawner.run([variant.argv() for _ in range(count - 1)], 0, variant.env)
    return runs


def _once(bench: Bench, variant: Variant, mode: str) -> None:
    """One recorded run of ``variant`` in ``mode`` (after its warm-up run if warm)."""
    count = 2 if mode == "warm" else 1
    idle = IDLE if mode == "idle" else 0.0
    start = end = 0
    if variant.call is not None:
        if idle:
            time.sleep(idle)
        for _ in range(count):
            start, end = variant.call()
    else:
        runs = _run_command(variant, idle, count)
        for timed in runs:
            if timed.rc != 0:
                raise RuntimeError(f"exit status {timed.rc}: {timed.err.strip()[-300:]}")
        start, end = runs[-1].start, runs[-1].end
    removed = bench.wait_removed(timeout=60) if variant.codex32 else None
    if variant.codex32 and removed is None:
        raise RuntimeError("the --rm containers were not removed within 60 s")
    variant.samples[mode].append(end - start)
    if removed is not None:
        variant.removed[mode].append(removed - start)


def measure(bench: Bench, rounds: int, log: Callable[[str], None], seed: int = 32) -> list[Variant]:
    """Run every variant ``rounds`` times in each mode; return them with their samples."""
    found = variants(bench)
    log(f"latency: {len(found)} variants x {rounds} rounds x {len(MODES)} modes")
    for variant in found:  # warm-up: imports, the fork server, caches, seccomp cache
        for _ in range(2):
            try:
                _once(bench, variant, "idle")
            except Exception as exc:
                variant.failures.append(f"warm-up: {exc}")
        variant.samples = {m: [] for m in MODES}
        variant.removed = {m: [] for m in MODES}
    shuffle = random.Random(seed)
    active = [v for v in found if not v.failures]
    for r in range(rounds):
        order = list(active)
        shuffle.shuffle(order)
        for variant in order:
            for mode in MODES:
                try:
                    _once(bench, variant, mode)
                except Exception as exc:
                    variant.failures.append(f"round {r}: {exc}")
        active = [v for v in active if len(v.failures) < 3]
        if (r + 1) % max(1, rounds // 4) == 0:
            log(f"latency: round {r + 1}/{rounds}")
    return found


def to_dict(found: list[Variant]) -> list[dict[str, Any]]:
    out = []
    for v in found:
        entry: dict[str, Any] = {"key": v.key, "label": v.label, "interpreter": v.interpreter,
                                 "failures": v.failures}  # fmt: skip
        for mode in MODES:
            summary = v.summary(mode)
            entry[mode] = summary.to_dict() if summary else None
            removed = v.removed_summary(mode)
            entry[f"{mode}_removed"] = removed.to_dict() if removed else None
        out.append(entry)
    return out

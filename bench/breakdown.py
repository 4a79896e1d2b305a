"""Where one ``containers.run(/bin/true)`` spends its time, phase by phase.

The engine is instrumented from outside (``probe``): its functions and sync messages
in the bench process are wrapped, and its helper processes (fork server, monitor)
run under ``python -S -m bench.probe``, which wraps the monitor's and the set-up
process's functions. Runs go through fresh engines (so their fork server starts
under the probe), with and without 50 ms of idle before each run, with the fork
server and (if the engine has the option) without it, as the CLI starts containers.

Also here: ``python -X importtime`` of the monitor's imports and of a whole CLI run.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import host, probe
from .env import Bench

IDLE = 0.05


@dataclass(frozen=True)
class Event:
    pid: int
    t: int
    depth: int
    kind: str
    label: str


@dataclass
class Run:
    """The events of one traced run, with helpers to find them."""

    engine_pid: int
    events: list[Event]
    begin: int
    end: int
    removed: int | None

    def find(
        self,
        label: str,
        kind: str | None = None,
        *,
        pid: int | None = None,
        after: int = 0,
        last: bool = False,
    ) -> Event | None:
        hits = [
            e
            for e in self.events
            if e.label == label
            and (kind is None or e.kind == kind)
            and (pid is None or e.pid == pid)
            and e.t >= after
        ]
        if not hits:
            return None
        return hits[-1] if last else hits[0]

    def starts_with(self, prefix: str, *, pid: int | None = None) -> Event | None:
        for e in self.events:
            if e.label.startswith(prefix) and (pid is None or e.pid == pid):
                return e
        return None


#: PID 1's steps, in plan order, as the probe labels them.
PID1_STEPS: tuple[tuple[str, str], ...] = (
    ("Setup.__init__", "read the seccomp program"),
    ("Setup._unshare", "unshare cgroup namespace"),
    ("mounts.make_private", "make / rprivate"),
    ("Setup._overlay", "mount overlay root"),
    ("Setup._bind", "bind mounts"),
    ("mounts.proc", "mount /proc"),
    ("mounts.sysfs", "mount /sys"),
    ("mounts.dev", "/dev: tmpfs, nodes, devpts, shm, mqueue"),
    ("mounts.tmpfs", "tmpfs mounts"),
    ("mounts.mask", "mask paths"),
    ("mounts.readonly_paths", "read-only paths"),
    ("Setup._mkdir", "mkdir steps"),
    ("Setup._pivot_root", "pivot_root"),
    ("mounts.remount_root_read_only", "read-only root"),
    ("process.loopback_up", "bring lo up"),
    ("syscalls.sethostname", "sethostname"),
    ("process.set_rlimits", "rlimits"),
    ("caps.drop_bounding_set", "drop bounding set"),
    ("Setup._user", "switch user (reads /etc/passwd)"),
    ("caps.set_capabilities", "set capabilities"),
    ("caps.set_no_new_privs", "no_new_privs"),
    ("Setup._seccomp", "load seccomp"),
)


def _span(a: Event | None, b: Event | None) -> float | None:
    if a is None or b is None or b.t < a.t:
        return None
    return (b.t - a.t) / 1e6


def _duration(run: Run, label: str, pid: int | None) -> float | None:
    """Total time inside ``label`` (B to E pairs) in process ``pid``."""
    total = 0
    found = False
    stack: list[int] = []
    for e in run.events:
        if e.label != label or (pid is not None and e.pid != pid):
            continue
        if e.kind == "B":
            stack.append(e.t)
        elif e.kind == "E" and stack:
            total += e.t - stack.pop()
            found = True
    return total / 1e6 if found else None


def _sum_of(run: Run, labels: tuple[str, ...], pid: int | None) -> float | None:
    values = [v for label in labels if (v := _duration(run, label, pid)) is not None]
    return sum(values) if values else None


def phases(run: Run) -> dict[str, float | None]:
    """The run cut into consecutive phases (ms); ``None`` where an event is missing."""
    eng = run.engine_pid
    out: dict[str, float | None] = {}
    begin = Event(eng, run.begin, 0, "I", "begin")
    end = Event(eng, run.end, 0, "I", "end")
    created = run.find("ContainerEngine._create", "E", pid=eng)
    launch = run.find("Launch.start", "B", pid=eng)
    plan = next((e for e in run.events if e.label == "recv:plan" and e.pid != eng), None)
    first = plan.pid if plan else None  # the monitor before it daemonizes
    ready = run.find("interpreter_ready", pid=first) if first else None
    imp_b = run.find("import:codex32._runtime.monitor", "B", pid=first) if first else None
    imp_e = run.find("import:codex32._runtime.monitor", "E", pid=first) if first else None
    mon_start = run.find("Monitor.start", "B")
    monitor = mon_start.pid if mon_start else None  # the daemonized monitor
    child = run.find("_forkserver._child", "B")
    stage2 = run.find("_monitor.stage2", "B")
    s2 = stage2.pid if stage2 else None
    ns_b = run.find("syscalls.unshare", "B", pid=s2) if s2 else None
    ns_e = run.find("syscalls.unshare", "E", pid=s2) if s2 else None
    got_created = run.find("recv:created", pid=eng)
    place_b = run.find("ContainerCgroups.place", "B", pid=eng)
    place_e = run.find("ContainerCgroups.place", "E", pid=eng)
    proceed = run.find("send:proceed", pid=eng)
    pid1_go = next(
        (e for e in run.events if e.label == "recv:proceed" and e.pid not in (eng, monitor)),
        None,
    )
    pid1 = pid1_go.pid if pid1_go else None
    execve = run.starts_with("execve:", pid=pid1) if pid1 else None
    eof = run.find("recv:EOF", pid=monitor, after=execve.t if execve else 0) if monitor else None
    rec_e = run.find("Monitor._record_start", "E", pid=monitor) if monitor else None
    sup_e = run.find("Monitor.supervise", "E", pid=monitor) if monitor else None
    sent_exit = run.find("send:exited", pid=monitor) if monitor else None
    got_exit = run.find("recv:exited", pid=eng)

    out["engine: create (validate, dirs, plan, record)"] = _span(begin, created)
    out["  of which network prepare (lease, hosts files)"] = _duration(
        run, "Networking.prepare", eng
    )
    out["engine: launch prep (lock, reload config, plan)"] = _span(created, launch)
    out["fork server: pass fds, fork the monitor"] = _span(launch, child)
    out["spawn `python -S` (interpreter start-up)"] = _span(launch, ready)
    out["import codex32._runtime.monitor"] = _span(imp_b, imp_e)
    out["plan to monitor"] = _span(imp_e or child, plan)
    out["monitor: daemonize, fork stage2"] = _span(plan, stage2)
    out["stage2: unshare pid, mount, uts, ipc, net"] = _span(ns_b, ns_e)
    out["fork PID 1, `created` to engine"] = _span(ns_e, got_created)
    attach_b = run.find("Networking.attach", "B", pid=eng)
    attach_e = run.find("Networking.attach", "E", pid=eng)
    out["engine: cgroup made (a thread from the launch's start, beside the forks)"] = _duration(
        run, "ContainerCgroups.prepare", eng
    )
    for label, text in (("Driver.open", "look for an existing cgroup"),
                        ("Driver.create", "mkdir in each hierarchy (+ cpuset copy)")):  # fmt: skip
        out[f"  of which {text}"] = _sum_of(run, (f"V1{label}", f"V2{label}"), eng)
    out["engine: cgroup placement"] = _span(place_b, place_e)
    out["  of which write cgroup.procs in each hierarchy"] = _sum_of(
        run, ("V1Cgroup.add_pid", "V2Cgroup.add_pid"), eng
    )
    out["engine: record cgroup paths (state.json)"] = _span(place_e, attach_b or proceed)
    out["engine: network attach (bridge, veth, address, route)"] = _span(attach_b, attach_e)
    for label, text in (
        ("network.ensure_bridge", "check/create the bridge"),
        ("Networking._apply_nat", "write the NAT table (`nft -f`)"),
        ("network.attach_container", "veth pair, eth0 address and route"),
    ):
        out[f"  of which {text}"] = _duration(run, label, eng)
    out["engine: send proceed"] = _span(attach_e or place_e, proceed)
    out["proceed relayed to PID 1"] = _span(proceed, pid1_go)
    steps_total = 0.0
    for label, text in PID1_STEPS:
        value = _duration(run, label, pid1)
        if value is not None:
            out[f"PID 1: {text}"] = value
            steps_total += value
    pid1_span = _span(pid1_go, execve)
    out["PID 1: Python between steps, exec lookup"] = (
        pid1_span - steps_total if pid1_span is not None else None
    )
    out["execve until the monitor sees it (EOF)"] = _span(execve, eof)
    out["monitor: record start (state.json, event)"] = _span(eof, rec_e)
    out["/bin/true runs, exits, is reaped"] = _span(rec_e, sup_e)
    out["monitor: record exit (state.json, event)"] = _span(sup_e, sent_exit)
    out["`exited` to engine"] = _span(sent_exit, got_exit)
    wait_b = run.find("ContainerEngine._wait_removed", "B", pid=eng)
    wait_e = run.find("ContainerEngine._wait_removed", "E", pid=eng)
    out["engine: read log, hang up"] = _span(got_exit, wait_b or end)
    out["engine: wait for the monitor's --rm removal"] = _span(wait_b, wait_e)
    release = _duration(run, "EndpointFiles.release", monitor)
    out["  of which the network release (in the monitor)"] = release
    out["engine: return"] = _span(wait_e, end)
    out["total (run() call to return)"] = _span(begin, end)
    out["  fsync, all processes, until removed (overlaps the phases)"] = _sum_of(
        run, ("os.fsync",), None
    )
    if run.removed is not None:
        out["after return: the rest of the --rm removal"] = (run.removed - run.end) / 1e6
    return out


def parse(path: str, engine_pid: int) -> list[Run]:
    """Split the trace into runs at the bench's ``run:begin``/``run:end`` markers."""
    events: list[Event] = []
    with open(path) as f:
        for line in f:
            parts = line.split(" ", 4)
            if len(parts) == 5:
                events.append(
                    Event(int(parts[0]), int(parts[1]), int(parts[2]), parts[3], parts[4].strip())
                )
    events.sort(key=lambda e: e.t)
    runs = []
    begin: Event | None = None
    end: Event | None = None
    for e in events:
        if e.pid != engine_pid:
            continue
        if e.label.startswith("run:begin"):
            begin, end = e, None
        elif e.label == "run:end":
            end = e
        elif e.label.startswith("run:removed") and begin is not None and end is not None:
            removed = None if e.label.endswith(":timeout") else e.t
            window = [x for x in events if begin.t <= x.t <= e.t]
            runs.append(Run(engine_pid, window, begin.t, end.t, removed))
            begin = end = None
    return runs


class _PopenProxy(types.ModuleType):
    """``subprocess`` as ``codex32._runtime.launch`` sees it, helpers started under the probe."""

    def __init__(self, trace: str) -> None:
        super().__init__("subprocess")
        self.__dict__.update(subprocess.__dict__)
        real = subprocess.Popen

        def popen(args: list[str], *rest: Any, **kwargs: Any) -> Any:
            traced = probe.helper_argv(list(args))
            if traced != list(args):
                env = dict(kwargs.get("env") or os.environ)
                env[probe.TRACE_ENV] = trace
                env["PYTHONPATH"] = str(host.REPO)
                kwargs["env"] = env
            return real(traced, *rest, **kwargs)

        self.Popen = popen


@contextlib.contextmanager
def instrumented(trace: str) -> Iterator[probe.Tracer]:
    import codex32._runtime.launch as launch_module

    tracer = probe.Tracer(trace)
    tracer.wrap_sync()
    tracer.wrap_fsync()
    tracer.wrap_targets(probe.ENGINE_TARGETS)
    namespace = vars(launch_module)
    real = namespace["subprocess"]
    namespace["subprocess"] = _PopenProxy(trace)
    try:
        yield tracer
    finally:
        namespace["subprocess"] = real
        tracer.close()


@dataclass
class Mode:
    key: str
    label: str
    fork_server: bool
    idle: float
    runs: list[dict[str, float | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def medians(self) -> dict[str, float | None]:
        keys: list[str] = []
        for run in self.runs:
            keys += [k for k in run if k not in keys]
        out: dict[str, float | None] = {}
        for key in keys:
            values = [v for run in self.runs if (v := run.get(key)) is not None]
            out[key] = statistics.median(values) if values else None
        return out


def measure(bench: Bench, runs: int, log: Callable[[str], None]) -> list[Mode]:
    from codex32 import ContainerConfig

    trace = str(bench.tmp / "trace.log")
    modes = [Mode("fs-warm", "fork server, back to back", True, 0.0),
             Mode("fs-idle", "fork server, 50 ms idle", True, IDLE)]  # fmt: skip
    if bench.supports_fork_server():
        modes += [Mode("fresh-warm", "fresh interpreter, back to back", False, 0.0),
                  Mode("fresh-idle", "fresh interpreter, 50 ms idle", False, IDLE)]  # fmt: skip
    else:
        modes = [Mode("fresh-warm", "fresh interpreter, back to back", False, 0.0),
                 Mode("fresh-idle", "fresh interpreter, 50 ms idle", False, IDLE)]  # fmt: skip
    with instrumented(trace) as tracer:
        engines = {fs: bench.engine(fork_server=fs) for fs in {m.fork_server for m in modes}}
        for _ in range(2):  # warm-up, untraced by the markers
            for engine in engines.values():
                engine.containers.run(
                    ContainerConfig(image="busybox", command=["/bin/true"], auto_remove=True)
                )
                bench.wait_removed()
        for i in range(runs):
            for mode in modes:
                if mode.idle:
                    time.sleep(mode.idle)
                tracer.emit("I", f"run:begin:{mode.key}:{i}")
                try:
                    engines[mode.fork_server].containers.run(
                        ContainerConfig(image="busybox", command=["/bin/true"], auto_remove=True)
                    )
                except Exception as exc:
                    mode.failures.append(f"{type(exc).__name__}: {exc}")
                tracer.emit("I", "run:end")
                removed = bench.wait_removed()
                tracer.emit("I", "run:removed" if removed is not None else "run:removed:timeout")
    parsed = parse(trace, os.getpid())
    by_key = {m.key: m for m in modes}
    for run in parsed:
        marker = next(e for e in run.events if e.label.startswith("run:begin:"))
        key = marker.label.split(":")[2]
        by_key[key].runs.append(phases(run))
    log(f"breakdown: {len(parsed)} traced runs")
    return modes


# -- import costs -----------------------------------------------------------------


@dataclass(frozen=True)
class ImportCost:
    name: str
    cumulative_us: int


def _top_level(argv: list[str], env: dict[str, str]) -> list[ImportCost]:
    """The top-level imports ``python -X importtime`` reports for ``argv``, in order."""
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    top: list[ImportCost] = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        fields = line[len("import time:") :].split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header line
        name = fields[2]
        if name.startswith("   "):  # nested: indented under its importer
            continue
        top.append(ImportCost(name.strip(), int(fields[1])))
    return top


def _importtime(
    argv: list[str], baseline: list[str], env: dict[str, str]
) -> tuple[int, list[ImportCost]]:
    """Total import time (us) of ``argv`` beyond the interpreter's own start-up imports
    (those of ``baseline``, the same interpreter running ``-c pass``), largest first."""
    startup = {c.name for c in _top_level(baseline, env)}
    top = [c for c in _top_level(argv, env) if c.name not in startup]
    top.sort(key=lambda c: -c.cumulative_us)
    return sum(c.cumulative_us for c in top), top


def import_costs(bench: Bench, repeats: int = 5) -> dict[str, Any]:
    """``-X importtime`` for the monitor (``-S``) and for a whole CLI run (median total)."""
    venv = str(host.VENV_PYTHON)
    env = dict(bench.env)
    env["PYTHONPATH"] = str(host.REPO)
    out: dict[str, Any] = {}
    bare = [venv, "-X", "importtime", "-S", "-c", "pass"]
    site = [venv, "-X", "importtime", "-c", "pass"]
    for key, argv, baseline, run_env in (
        ("monitor", [venv, "-X", "importtime", "-S", "-c", "import codex32._runtime.monitor"],
         bare, env),
        ("forkserver", [venv, "-X", "importtime", "-S", "-c",
                        "import codex32._runtime.forkserver"], bare, env),
        ("cli", [venv, "-X", "importtime", str(host.REPO / ".venv/bin/codex32"), "run", "--rm",
                 "busybox", "/bin/true"], site, dict(bench.env)),
    ):  # fmt: skip
        totals = []
        top: list[ImportCost] = []
        for _ in range(repeats):
            total, top = _importtime(argv, baseline, run_env)
            totals.append(total)
            if key == "cli":
                bench.wait_removed()
        out[key] = {
            "total_ms": statistics.median(totals) / 1e3 if totals else None,
            "top": [(c.name, c.cumulative_us / 1e3) for c in top[:10]],
        }
    return out

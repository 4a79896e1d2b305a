"""SIGKILL of each engine-side process at each step of start, stop, exec, restart, rm.

Each trial holds one step (``CODEX32_FAULT_PAUSE``), kills one process there, lets the
rest go on, then recovers as ``init_engine()`` does and checks that the container is
consistent (running with its monitor, exited with a known or "lost" exit code, or
gone), that no log line written before the kill is lost, and, once it is removed,
that nothing is left: directory, name, mount, process, cgroup, veth, lease.

The full matrix (``stress``) has 100+ trials; ``make test`` runs one trial per step.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from pathlib import Path

import pytest
from fault_driver import COUNTER
from fault_support import (
    FaultRun,
    Trial,
    children,
    kill,
    leases,
    log_lines,
    monitors,
    pid1s,
    recover,
    settle,
    wait_gone,
)
from helpers import assert_nothing_new, session_cgroups, snapshot
from lifecycle_support import eventually

from codex32 import ContainerEngine, ContainerNotFoundError, ContainerState

pytestmark = pytest.mark.root

_START = {
    "create.config": ("caller",),
    "start.launch": ("caller",),
    "monitor.plan": ("caller", "forkserver", "paused"),
    "stage2.namespaces": ("caller", "monitor", "paused"),
    "monitor.created": ("caller", "forkserver", "monitor", "pid1"),
    "pid1.proceed": ("caller", "monitor", "pid1"),
    "start.placed": ("caller", "monitor", "pid1"),
    "monitor.started": ("caller", "monitor", "pid1"),
}
_STOP = {
    "stop.signalled": ("caller", "monitor", "pid1"),
    "monitor.exited": ("caller", "monitor"),
    "monitor.recorded": ("caller", "monitor"),
}
_RESTART = {
    "stop.signalled": ("caller", "monitor", "pid1"),
    "start.launch": ("caller",),
    "monitor.created": ("caller", "monitor", "pid1"),
    "start.placed": ("caller", "monitor", "pid1"),
    "monitor.started": ("caller", "monitor", "pid1"),
}
_EXEC = {
    "exec.setup": ("caller", "paused", "monitor", "pid1"),
    "exec.created": ("caller", "exec", "monitor", "pid1"),
}
_RM = {
    "remove.cleaning": ("caller",),
    "monitor.exited": ("caller", "monitor"),
    "monitor.recorded": ("caller", "monitor"),
}
_CRASH = {"monitor.exited": ("monitor",), "monitor.recorded": ("monitor",),
          "monitor.restart": ("monitor",)}  # fmt: skip


def _matrix() -> list[Trial]:
    trials: list[Trial] = []
    for isolation in ("standard", "strict"):
        trials += [Trial("run", s, v, isolation) for s, vs in _START.items() for v in vs]
    late = ("monitor.created", "pid1.proceed", "start.placed", "monitor.started")
    trials += [Trial("run", s, v, network="bridge") for s in late for v in _START[s]]
    trials += [
        Trial("start", s, v, restart="always")
        for s in ("start.launch", *late)
        for v in _START[s]
        if v != "forkserver"
    ]
    for network, restart in (("none", "no"), ("bridge", "always")):
        trials += [Trial("stop", s, v, network=network, restart=restart)
                   for s, vs in _STOP.items() for v in vs]  # fmt: skip
    trials += [Trial("restart", s, v) for s, vs in _RESTART.items() for v in vs]
    trials += [Trial("exec", s, v, "strict") for s, vs in _EXEC.items() for v in vs]
    trials += [Trial("rm", s, v, network="bridge") for s, vs in _RM.items() for v in vs]
    trials += [Trial("rm", "monitor.remove", v, auto_remove=True) for v in ("caller", "monitor")]
    for isolation in ("standard", "strict"):
        trials += [Trial("crash", s, v, isolation, restart="on-failure:3")
                   for s, vs in _CRASH.items() for v in vs]  # fmt: skip
        trials += [Trial("crash", "monitor.remove", "monitor", isolation, auto_remove=True)]
    # A start from a pooled sandbox: the claimed monitor, its PID 1, the caller.
    pooled = ("monitor.plan", "monitor.created", "pid1.proceed", "start.placed",
              "monitor.started")  # fmt: skip
    for isolation in ("standard", "strict"):
        trials += [Trial("run", s, v, isolation, via="pool") for s in pooled for v in _START[s]]
    # The CLI as the caller (its fork server is a once-server that becomes the monitor).
    trials += [Trial("run", s, v, via="cli") for s, vs in _START.items() for v in vs
               if v != "forkserver"]  # fmt: skip
    for verb, steps in (("stop", _STOP), ("restart", _RESTART), ("rm", _RM), ("exec", _EXEC)):
        trials += [Trial(verb, s, v, via="cli") for s, vs in steps.items() for v in vs]
    return trials


def _bounded(trials: list[Trial]) -> list[Trial]:
    """One trial per (verb, step), the last victim listed (the deepest process)."""
    chosen: dict[tuple[str, str], Trial] = {}
    for trial in trials:
        if trial.isolation == "standard" and trial.network == "none" and trial.via == "api":
            chosen[(trial.verb, trial.step)] = trial
    cli = [t for t in trials if t.via == "cli" and t.verb == "run" and t.victim == "caller"
           and t.step in ("start.placed", "monitor.started")]  # fmt: skip
    pooled = [t for t in trials if t.via == "pool" and t.isolation == "standard"
              and t.victim == _START[t.step][-1]]  # fmt: skip
    return [*chosen.values(), *cli, *pooled]


ALL = _matrix()
BOUNDED = _bounded(ALL)


def _victim(trial: Trial, run: FaultRun, paused: int, engine: ContainerEngine, cid: str) -> int:
    assert run.caller is not None
    if trial.victim == "paused":
        return paused
    if trial.victim == "caller":
        if trial.verb == "crash":  # nothing calls; the monitor is the only engine process
            return monitors(cid)[0]
        return run.caller.pid
    if trial.victim == "forkserver":
        found = children(run.caller.pid, lambda p: "codex32._runtime.forkserver" in _cmd(p))
        assert found, "no fork server under the caller"
        return found[0]
    if trial.victim == "monitor":
        found = monitors(cid)
        assert found, "no monitor to kill"
        return found[0]
    if trial.victim == "pid1":
        found = pid1s(cid, engine)
        assert found, "no PID 1 to kill"
        return found[0]
    if trial.victim == "exec":
        found = children(run.caller.pid, lambda p: "codex32._runtime.exec" in _cmd(p))
        assert found, "no exec set-up process under the caller"
        return found[0]
    raise AssertionError(trial.victim)


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _removed(storage_dir: Path, cid: str) -> bool:
    containers = storage_dir / "containers"
    return not monitors(cid) and not any(
        (containers / n).exists() for n in (cid, f".removing-{cid}")
    )


def _procs(cgroup: str) -> str:
    try:
        return (Path(cgroup) / "cgroup.procs").read_text().strip()
    except OSError:
        return ""


def _links() -> set[str]:
    return {name for _i, name in socket.if_nameindex() if "c32" in name}


def _prepare(trial: Trial, run: FaultRun, name: str) -> str:
    """Bring the container to where the verb starts from; the pause is disarmed
    meanwhile (its marker exists), though the processes started carry it. Returns the
    container's id once it exists (a fast ``rm`` may have removed its name by the
    time the pause is seen)."""
    marker = run.dir / trial.step
    marker.write_text("0")
    args = [trial.isolation, trial.network, trial.restart, "1" if trial.auto_remove else "0",
            "deaf" if trial.step == "stop.signalled" else "hears"]  # fmt: skip
    if trial.verb == "run" and trial.via == "pool":
        run.call(trial.verb, name, *args, pool=True)
        run.wait_for_file("warm")  # the pool is full: the run claims a sandbox
        marker.unlink()
        (run.dir / "armed").touch()
        return ""
    if trial.verb in {"run", "crash"}:
        marker.unlink()
        if trial.via == "cli":
            run.call_cli(*_cli_run(trial, name))
        else:
            run.call(trial.verb, name, *args)
        return ""
    run.call("create" if trial.verb == "start" else "run", name, *args)
    result = run.finish_caller()
    assert result.startswith("exit 0"), result
    cid = os.path.basename(os.readlink(run.storage_dir / "names" / name))
    marker.unlink()
    if trial.via == "cli":
        run.call_cli(*_CLI_VERBS[trial.verb], name, *_CLI_TAIL.get(trial.verb, []))
    else:
        run.call(trial.verb, name)
    return cid


_CLI_VERBS = {"stop": ["stop", "-t", "2"], "restart": ["restart", "-t", "2"], "rm": ["rm", "-f"],
              "exec": ["exec"], "start": ["start"]}  # fmt: skip
_CLI_TAIL = {"exec": ["--", "sh", "-c", "echo exec-ran"]}


def _cli_run(trial: Trial, name: str) -> list[str]:
    return [
        "run", "-d", "--name", name, "--network", trial.network, "--isolation", trial.isolation,
        "--restart", trial.restart, "--stop-timeout", "2", *(["--rm"] if trial.auto_remove else []),
        "busybox", "--", "sh", "-c", COUNTER,
    ]  # fmt: skip


def _run_trial(trial: Trial, engine: ContainerEngine, storage_dir: Path) -> None:
    name = f"fault-{secrets.token_hex(4)}"
    before = snapshot(storage_dir)
    links_before, leases_before = _links(), leases(storage_dir)
    run = FaultRun(storage_dir, trial.step)
    cid = ""
    try:
        cid = _prepare(trial, run, name)
        paused = run.paused_pid()
        cid = cid or os.path.basename(os.readlink(storage_dir / "names" / name))
        victim = _victim(trial, run, paused, engine, cid)
        logged = log_lines(storage_dir, cid)
        kill(victim)
        wait_gone(victim)
        run.release()
        if trial.verb != "crash":
            run.finish_caller()  # it may fail (its fork server, monitor... died): no hang
        recover(storage_dir)
        problem = settle(engine, name)
        assert problem is None, f"after recovery the container is {problem}"
        try:
            container = engine.containers.get(name)
        except ContainerNotFoundError:
            container = None
            # Gone: its monitor may still be finishing the removal it was held in.
            assert eventually(lambda: _removed(storage_dir, cid), 10), "removal not finished"
        if container is not None:
            kept = log_lines(storage_dir, cid)
            assert kept[: len(logged)] == logged, "log lines written before the kill were lost"
            if container.status not in (ContainerState.RUNNING.value, "paused"):
                # Its cgroup stays until rm (by design), but nothing may run in it.
                busy = [c for c in session_cgroups() if c.endswith(cid) and _procs(c)]
                assert busy == [], f"a {container.status} container has processes in {busy}"
            container.remove(force=True)
    finally:
        link = storage_dir / "names" / name
        cid = cid or (os.path.basename(os.readlink(link)) if link.is_symlink() else "")
        run.close()
        if run.caller is not None:
            if run.caller.poll() is None:
                run.caller.kill()
            run.caller.communicate()  # (closes its pipes)
        if cid:
            _remove_quietly(engine, cid)
    assert_nothing_new(before, storage_dir)
    deadline = time.monotonic() + 5
    while _links() - links_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _links() - links_before == set(), "veth left"
    assert leases(storage_dir) - leases_before == set(), "address lease left"


def _remove_quietly(engine: ContainerEngine, cid: str) -> None:
    with contextlib.suppress(ContainerNotFoundError):
        engine.containers.get(cid).remove(force=True)


@pytest.mark.parametrize("trial", BOUNDED, ids=lambda t: t.id)
def test_kill_at_step(trial: Trial, engine: ContainerEngine, storage_dir: Path) -> None:
    _run_trial(trial, engine, storage_dir)


@pytest.mark.stress
@pytest.mark.parametrize("trial", [t for t in ALL if t not in BOUNDED], ids=lambda t: t.id)
def test_kill_at_step_full(trial: Trial, engine: ContainerEngine, storage_dir: Path) -> None:
    _run_trial(trial, engine, storage_dir)


def test_matrix_has_100_trials() -> None:
    assert len(ALL) >= 100, len(ALL)

"""The bench's pure parts: summaries, OCI configs, trace parsing, verdicts (no root)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for ``bench``

from bench import breakdown, oci, probe, report
from bench.stats import Summary, fmt_ratio, fmt_summary


def test_summary_median_min_max_and_ratio() -> None:
    summary = Summary.of([3.0, 1.0, 2.0, 10.0])
    assert summary is not None
    assert (summary.median, summary.low, summary.high, summary.count) == (2.5, 1.0, 10.0, 4)
    anchor = Summary.of([5.0])
    assert summary.ratio(anchor) == pytest.approx(0.5)
    assert Summary.of([]) is None
    assert summary.ratio(None) is None
    assert fmt_summary(summary) == "2.5 (1.0-10.0)"
    assert fmt_ratio(1.234) == "1.23x"


def test_seccomp_section_from_selected_rules() -> None:
    rule = SimpleNamespace(names=("read", "write"), errno_ret=None, args=())
    denied = SimpleNamespace(
        names=("personality",),
        errno_ret=1,
        args=(SimpleNamespace(arg=0, op="SCMP_CMP_EQ", value=8, value_two=0),),
    )
    section = oci.seccomp_section([rule, denied], 1, "x86_64")
    assert section["defaultAction"] == "SCMP_ACT_ERRNO"
    assert section["architectures"] == ["SCMP_ARCH_X86_64"]
    allow, deny = section["syscalls"]
    assert allow == {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}
    assert deny["errnoRet"] == 1
    assert deny["args"] == [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]


def test_oci_config_matches_standard() -> None:
    config = oci.make_config("/r", ["/bin/true"], cgroups_path="p/c", seccomp=None)
    linux = config["linux"]
    assert {n["type"] for n in linux["namespaces"]} == {
        "pid", "network", "ipc", "uts", "mount", "cgroup",
    }  # fmt: skip
    assert linux["cgroupsPath"] == "p/c"
    assert "seccomp" not in linux
    assert config["process"]["noNewPrivileges"] is True
    assert len(config["process"]["capabilities"]["bounding"]) == 14
    assert config["root"] == {"path": "/r", "readonly": False}


def test_the_oci_capabilities_are_the_engines_standard_set() -> None:
    from codex32.config.capabilities import DOCKER_DEFAULT_CAPABILITIES

    assert frozenset(oci.DOCKER_CAPABILITIES) == DOCKER_DEFAULT_CAPABILITIES


def test_helper_argv_runs_engine_helpers_under_the_probe() -> None:
    argv = ["/py", "-S", "-m", "codex32._runtime.monitor", "5"]
    assert probe.helper_argv(argv) == [
        "/py",
        "-S",
        "-m",
        "bench.probe",
        "codex32._runtime.monitor",
        "5",
    ]
    assert probe.helper_argv(["/py", "-m", "codex32._engine.restart"]) == [
        "/py",
        "-m",
        "codex32._engine.restart",
    ]


def _trace(tmp_path: Path, lines: list[tuple[int, int, str, str]]) -> str:
    path = tmp_path / "trace.log"
    path.write_text("".join(f"{pid} {t * 1_000_000} 0 {kind} {label}\n"
                            for pid, t, kind, label in lines))  # fmt: skip
    return str(path)


def test_trace_is_cut_into_runs_and_phases(tmp_path: Path) -> None:
    eng, first, mon, s2, pid1 = 100, 200, 201, 202, 1
    path = _trace(
        tmp_path,
        [
            (eng, 0, "I", "run:begin:fs-warm:0"),
            (eng, 1, "B", "ContainerEngine._create"),
            (eng, 11, "E", "ContainerEngine._create"),
            (eng, 12, "B", "Launch.start"),
            (first, 14, "B", "_forkserver._child"),
            (first, 15, "I", "recv:plan"),
            (mon, 17, "B", "Monitor.start"),
            (s2, 18, "B", "_monitor.stage2"),
            (s2, 18, "B", "syscalls.unshare"),
            (s2, 20, "E", "syscalls.unshare"),
            (eng, 22, "I", "recv:created"),
            (eng, 22, "B", "ContainerCgroups.place"),
            (eng, 27, "E", "ContainerCgroups.place"),
            (eng, 28, "I", "send:proceed"),
            (mon, 28, "I", "recv:proceed"),
            (pid1, 29, "I", "recv:proceed"),
            (pid1, 30, "B", "mounts.proc"),
            (pid1, 31, "E", "mounts.proc"),
            (pid1, 33, "I", "execve:/bin/true"),
            (mon, 34, "I", "recv:EOF"),
            (mon, 35, "B", "Monitor._record_start"),
            (mon, 36, "E", "Monitor._record_start"),
            (mon, 38, "E", "Monitor.supervise"),
            (mon, 39, "I", "send:exited"),
            (eng, 40, "I", "recv:exited"),
            (eng, 41, "I", "run:end"),
            (eng, 50, "I", "run:removed"),
        ],
    )
    runs = breakdown.parse(path, eng)
    assert len(runs) == 1
    phases = breakdown.phases(runs[0])
    assert phases["engine: create (validate, dirs, plan, record)"] == 11
    assert phases["fork server: pass fds, fork the monitor"] == 2
    assert phases["spawn `python -S` (interpreter start-up)"] is None
    assert phases["stage2: unshare pid, mount, uts, ipc, net"] == 2
    assert phases["engine: cgroup placement"] == 5
    assert phases["proceed relayed to PID 1"] == 1
    assert phases["PID 1: mount /proc"] == 1
    assert phases["PID 1: Python between steps, exec lookup"] == 3
    assert phases["total (run() call to return)"] == 41
    assert phases["after return: the rest of the --rm removal"] == 9
    assert phases["engine: read log, hang up"] == 1


def _lat(key: str, warm: float, idle: float) -> dict[str, Any]:
    def s(v: float) -> dict[str, float]:
        return {"median": v, "min": v, "max": v, "n": 1}

    return {"key": key, "warm": s(warm), "idle": s(idle)}


def test_targets_report_ratios_and_misses() -> None:
    results = {
        "latency": [_lat("crun", 10, 20), _lat("api", 9, 45), _lat("cli", 40, 50),
                    _lat("podman", 100, 100)],
        "memory": [{"n": 50, "per_container_uss": 2.5e6}],
        "anchor_memory": [{"monitor": "conmon", "uss_median": 1e6}],
    }  # fmt: skip
    verdicts = {t: (m, v) for t, m, v in report.targets(results)}
    measured, verdict = verdicts["1. API start, no pool ≤ 1.5x crun"]
    assert measured.startswith("back to back: 0.90x") and "after idle: 2.25x" in measured
    assert verdict == "met; missed by 1.50x"
    key = "2. CLI `run --rm` (default bridge) ≤ 0.5x podman (`--network none`)"
    assert verdicts[key][1] == "met; met"
    assert verdicts["1. API start, pool hit ≤ 0.5x crun"][1] == "**not measured**"
    key = "5. ≤ 2 MB USS of engine memory per running container (fork server monitors)"
    assert verdicts[key] == ("2.50 MB at 50 (anchors: conmon 1.00 MB)", "missed by 1.25x")


def test_scale_rows_give_the_curve_and_growth() -> None:
    def op(v: float) -> dict[str, float]:
        return {"median": v, "min": v, "max": v, "n": 1}

    results = {"scale": [{"running": 0, "ops": {"start": op(50), "ps": op(10)}},
                         {"running": 100, "ops": {"start": op(55), "ps": op(100)}},
                         {"running": 500, "ops": {"start": op(58), "ps": op(200)}}]}  # fmt: skip
    verdicts = {t: (m, v) for t, m, v in report.targets(results)}
    assert verdicts["4. `start` flat (±20 %) with 0, 100, 500 running"][1] == "met"
    assert (
        verdicts["4. `ps` flat (±20 %) with 0, 100, 500 running"][1]
        == "missed: 20.00x (highest at 500)"
    )
    assert verdicts["4. `ps` of 500 ≤ 150 ms"] == ("200 ms", "missed by 1.33x")


def test_the_cli_through_the_service_is_held_to_3x_crun() -> None:
    results = {"latency": [_lat("crun", 10, 20), _lat("cli-host", 25, 70),
                           _lat("cli-host-nonet", 20, 50)]}  # fmt: skip
    verdicts = {t: (m, v) for t, m, v in report.targets(results)}
    bridged = verdicts["2. CLI through the host service (`--host`, default bridge) ≤ 3x crun"]
    assert bridged == ("back to back: 2.50x (25.0 vs 10.0 ms), after idle: 3.50x (70.0 vs "
                       "20.0 ms)", "met; missed by 1.17x")  # fmt: skip
    assert verdicts["2. CLI through the host service, `--network none` ≤ 3x crun"][1] == "met; met"
    without = {t: v for t, _m, v in report.targets({"latency": [_lat("crun", 10, 20)]})}
    assert without["2. CLI through the host service (`--host`) ≤ 3x crun"] == "**not measured**"


def _conc(runtime: str, n: int, running: list[float], failures: int = 0) -> dict[str, Any]:
    def s(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"median": sorted(values)[len(values) // 2], "min": min(values),
                "max": max(values), "n": len(values)}  # fmt: skip

    return {"runtime": runtime, "n": n, "running": s(running),
            "exited": s([v + 1000 for v in running]), "removed": s(running),
            "failures": [f"1/{n} failed: boom"] * failures}  # fmt: skip


def test_200_at_once_must_complete_without_failure() -> None:
    conc = [_conc("codex32 API", 50, [800]), _conc("crun", 50, [400]),
            _conc("codex32 API", 200, [3000, 3100, 2900]), _conc("crun", 200, [1500] * 3),
            _conc("codex32 API, network none", 200, [2500, 2600], failures=1)]  # fmt: skip
    verdicts = {t: (m, v) for t, m, v in report.concurrency_targets(conc)}
    assert verdicts["3. 50 concurrent starts ≤ 1.0x crun"] == ("800 ms vs 400 ms",
                                                               "missed by 2.00x")  # fmt: skip
    measured, verdict = verdicts["3. 200 at once completes with no failure"]
    assert verdict == "missed: 1 failed rounds"
    assert (
        "codex32 API: all running 3000 (2900-3100) ms, all exited 4000 (3900-4100) ms, "
        "3 of 3 rounds without failure" in measured
    )
    assert "codex32 API, network none: all running 2600 (2500-2600) ms" in measured
    assert "2 of 3 rounds without failure" in measured
    clean = [c for c in conc if not c["failures"]]
    assert report.concurrency_targets(clean)[-1][2] == "met"
    nothing = [_conc("codex32 API", 200, [], failures=3), _conc("crun", 200, [1500])]
    assert report.concurrency_targets(nothing)[-1][1].startswith(
        "codex32 API: no run completed, 0 of 3 rounds"
    )


def test_concurrency_runs_200_by_default_and_memory_keeps_its_sizes() -> None:
    from bench import run

    args = run.parse_args([])
    assert (args.sizes, args.memory_sizes) == ([1, 10, 50, 200], [1, 10, 50])
    assert run.parse_args(["--quick"]).sizes == [1, 10, 50]
    assert run.parse_args(["--sizes", "5", "--memory-sizes", "2"]).memory_sizes == [2]


def test_service_started_containers_are_held_to_2_mb() -> None:
    mode = "host service (REST `POST /containers?start=true`, its fork server)"
    results = {"memory": [{"n": 50, "mode": mode, "per_container_uss": 3e6}]}
    verdicts = {t: (m, v) for t, m, v in report.targets(results)}
    key = f"5. ≤ 2 MB USS of engine memory per running container ({mode} monitors)"
    assert verdicts[key] == ("3.00 MB at 50", "missed by 1.50x")

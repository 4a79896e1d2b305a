"""Codex-32 benchmarks beside crun, runc and bubblewrap: ``make bench``.

Usage (as root, from the checkout)::

    .venv/bin/python bench/run.py [--quick] [--only latency,concurrency,memory,breakdown]
                                  [--rounds N] [--sizes 1,10,50,200] [--memory-sizes 1,10,50]
                                  [--json FILE] [--markdown FILE]

Prints the results as markdown (docs/performance.md explains them). Everything the
run creates (a storage directory under /tmp, OCI bundles, containers, cgroups
beneath the bench's own) is removed at the end, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` and ``codex32`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import (
    anchors,
    breakdown,
    cgroup_attach,
    concurrency,
    host,
    latency,
    memory,
    report,
    scale,
)
from bench.env import Bench, BenchError

SECTIONS = ("latency", "concurrency", "memory", "breakdown", "scale")


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that the clean-up below runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (~1 minute)")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections ({', '.join(SECTIONS)})")  # fmt: skip
    parser.add_argument("--rounds", type=int, help="latency rounds (default 10, quick 3)")
    parser.add_argument("--repeats", type=int, help="concurrency repeats (default 3, quick 1)")
    parser.add_argument("--traced", type=int,
                        help="breakdown runs per mode (default 8, quick 3)")  # fmt: skip
    parser.add_argument(
        "--sizes", help="concurrency: containers at once (default 1,10,50,200; quick 1,10,50)"
    )
    parser.add_argument("--memory-sizes", default="1,10,50",
                        help="memory: containers running (default 1,10,50)")  # fmt: skip
    parser.add_argument(
        "--running", help="scale: containers running (default 0,100,500; quick 0,50)"
    )
    parser.add_argument("--scale-reps", type=int, help="scale: runs per verb (default 5; quick 3)")
    parser.add_argument(
        "--storage", type=Path, help="reuse this storage directory (kept; not its containers)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--markdown", type=Path, help="also write the markdown here")
    parser.add_argument("--seed", type=int, default=32, help="shuffle seed of the latency order")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    quick = args.quick
    args.rounds = args.rounds or (3 if quick else 10)
    args.repeats = args.repeats or (1 if quick else 3)
    args.traced = args.traced or (3 if quick else 8)
    args.sizes = [
        int(s) for s in (args.sizes or ("1,10,50" if quick else "1,10,50,200")).split(",")
    ]
    args.memory_sizes = [int(s) for s in args.memory_sizes.split(",")]
    args.running = [int(s) for s in (args.running or ("0,50" if quick else "0,100,500")).split(",")]
    args.scale_reps = args.scale_reps or (3 if quick else 5)
    return args


def _section(bench: Bench, section: str, args: argparse.Namespace) -> dict[str, Any]:
    if section == "latency":
        found = latency.measure(bench, args.rounds, _log, seed=args.seed)
        return {"latency": latency.to_dict(found)}
    if section == "concurrency":
        series = concurrency.measure(bench, args.sizes, args.repeats, _log)
        return {"concurrency": concurrency.to_dict(series)}
    if section == "memory":
        samples = memory.measure(bench, args.memory_sizes, _log)
        if bench.supports_fork_server():
            bench.close_engines()
            small = sorted({n for n in args.memory_sizes if n <= 10})
            samples += memory.measure(bench, small, _log, fork_server=False)
            bench.close_engines()
            samples += memory.measure(bench, small, _log, via_cli=True)
        if bench.service is not None:
            bench.close_engines()
            samples += memory.measure(bench, args.memory_sizes, _log, via_service=bench.service)
        memory_found: dict[str, Any] = {"memory": [s.to_dict() for s in samples]}
        count = min(10, max(args.memory_sizes))
        memory_found["anchor_memory"] = [
            anchors.monitors(anchor, count, _log)
            for anchor in (bench.podman, bench.docker)
            if anchor is not None
        ]
        return memory_found
    if section == "scale":
        return {"scale": scale.measure(bench, args.running, args.scale_reps, _log)}
    modes = breakdown.measure(bench, args.traced, _log)
    return {
        "breakdown": [
            {"key": m.key, "label": m.label, "runs": len(m.runs), "medians": m.medians(),
             "failures": m.failures}
            for m in modes
        ],
        "imports": breakdown.import_costs(bench, 2 if args.quick else 5),
        "cgroup_attach": cgroup_attach.measure(bench.attach_cgroup, 10 if args.quick else 30),
    }  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    sections = args.only.split(",")
    results: dict[str, Any] = {"host": host.facts()}
    results["options"] = (
        f"rounds={args.rounds} repeats={args.repeats} traced={args.traced} "
        f"sizes={','.join(map(str, args.sizes))} "
        f"memory_sizes={','.join(map(str, args.memory_sizes))} "
        f"running={','.join(map(str, args.running))} "
        f"scale_reps={args.scale_reps} quick={args.quick}"
    )
    host.private_network()
    bench = Bench(args.storage)
    try:
        _log(f"storage {bench.storage}, cgroup parents {bench.codex32_cgroup}[-oci]")
        bench.prepare(_log)
        if bench.seccomp is None:
            _log("could not read the engine's seccomp profile: crun and runc run without one")
        errors: dict[str, str] = {}
        load: dict[str, str] = {}
        results["load"] = load
        for section in SECTIONS:
            if section not in sections:
                continue
            before = host.load_average()
            try:
                results.update(_section(bench, section, args))
            except Exception as exc:  # one broken section must not lose the others
                _log(f"{section} failed: {exc}")
                errors[section] = traceback.format_exc()
            finally:
                bench.close_engines()  # their fork servers would count in the memory figures
                bench.wait_removed(timeout=120)
                load[section] = f"{before} -> {host.load_average()}"
        results["errors"] = errors
    finally:
        _log("cleaning up")
        problems = bench.close()
        for problem in problems:
            _log(f"clean-up: {problem}")
        results["cleanup_problems"] = problems
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started = time.monotonic()
    try:
        results = run(args)
    except BenchError as exc:
        _log(f"error: {exc}")
        return 2
    results["duration_s"] = round(time.monotonic() - started, 1)
    text = report.render(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    _log(f"done in {results['duration_s']} s")
    return 1 if results["cleanup_problems"] else 0


if __name__ == "__main__":
    sys.exit(main())

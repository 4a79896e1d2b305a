"""The results as markdown (what docs/performance.md quotes) and the targets' verdicts."""

from __future__ import annotations

from typing import Any

from .stats import Summary, fmt_bytes, fmt_ms, fmt_ratio, fmt_summary, table

MB = 1e6


def _summary(data: dict[str, Any] | None) -> Summary | None:
    if not data:
        return None
    return Summary(data["median"], data["min"], data["max"], data["n"])


def latency_section(rows: list[dict[str, Any]]) -> str:
    anchor = {m: _summary(next((r[m] for r in rows if r["key"] == "crun"), None))
              for m in ("warm", "idle")}  # fmt: skip
    body = []
    for r in rows:
        warm, idle = _summary(r["warm"]), _summary(r["idle"])
        removed = _summary(r.get("idle_removed"))
        body.append([
            f"`{r['key']}`", r["label"],
            fmt_summary(warm), fmt_ratio(warm.ratio(anchor["warm"]) if warm else None),
            fmt_summary(idle), fmt_ratio(idle.ratio(anchor["idle"]) if idle else None),
            fmt_ms(removed.median) if removed else "-",
        ])  # fmt: skip
    out = table(
        ["key", "variant", "back to back, ms", "x crun", "after 50 ms idle, ms", "x crun",
         "idle run until removed, ms"],
        body,
    )  # fmt: skip
    interpreters = [f"* `{r['key']}`: {r['interpreter']}" for r in rows if r["interpreter"] != "-"]
    failures = [f"* `{r['key']}`: {f}" for r in rows for f in r["failures"][:3]]
    out += "\n\nInterpreters:\n\n" + "\n".join(interpreters)
    if failures:
        out += "\n\nFailures:\n\n" + "\n".join(failures)
    return out


def concurrency_section(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        crun = next((c for c in rows if c["runtime"] == "crun" and c["n"] == r["n"]), None)
        running, exited, removed = (_summary(r[k]) for k in ("running", "exited", "removed"))
        crun_running = _summary(crun["running"]) if crun else None
        body.append([
            str(r["n"]), r["runtime"], fmt_summary(running),
            fmt_ratio(running.ratio(crun_running) if running else None),
            fmt_summary(exited), fmt_summary(removed),
            "; ".join(r["failures"][:2]) or "",
        ])  # fmt: skip
    return table(
        ["N", "runtime", "all running, ms", "x crun", "all exited, ms", "all removed, ms",
         "failures"],
        body,
    )  # fmt: skip


def memory_section(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        body.append([
            r.get("mode", "-"), str(r["n"]), fmt_bytes(r["monitor_uss_median"]),
            fmt_bytes(r["monitor_pss_median"]), fmt_bytes(r["monitor_rss_median"]),
            f"{fmt_bytes(r['helpers_uss'])} / {fmt_bytes(r['helpers_pss'])}",
            fmt_bytes(r["engine_uss_growth"]),
            fmt_bytes(r["per_container_uss"]), fmt_bytes(r["per_container_pss"]),
        ])  # fmt: skip
    return table(
        ["monitors", "running", "monitor USS", "monitor PSS", "monitor RSS",
         "shared helpers USS / PSS", "engine process growth (USS)",
         "engine-side USS per container", "engine-side PSS per container"],
        body,
    )  # fmt: skip


def breakdown_section(modes: list[dict[str, Any]], imports: dict[str, Any] | None) -> str:
    keys: list[str] = []
    for mode in modes:
        keys += [k for k in mode["medians"] if k not in keys]
    body = [
        [k, *(fmt_ms(m["medians"].get(k)) for m in modes)]
        for k in keys
        if any(m["medians"].get(k) is not None for m in modes)
    ]
    out = table(["phase (median ms)", *(f"{m['label']} (n={m['runs']})" for m in modes)], body)
    if imports:
        lines = []
        for key, text in (("monitor", "`-S -c 'import codex32._runtime.monitor'`"),
                          ("forkserver", "`-S -c 'import codex32._runtime.forkserver'`"),
                          ("cli", "a whole `codex32 run --rm busybox /bin/true`")):  # fmt: skip
            data = imports.get(key)
            if not data:
                continue
            top = ", ".join(f"{name} {ms:.1f}" for name, ms in data["top"][:6])
            lines.append(f"* {text}: {fmt_ms(data['total_ms'])} ms of imports ({top})")
        out += "\n\nImports beyond the interpreter's own start-up (`-X importtime`, ms):\n\n"
        out += "\n".join(lines)
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each target the run has data for."""
    out: list[tuple[str, str, str]] = []
    latency = {r["key"]: r for r in results.get("latency", [])}
    crun = latency.get("crun")
    for key, limit, text in (("api", 1.0, "API start ≤ 1.0x crun"),
                             ("cli", 3.0, "CLI `run --rm` ≤ 3x crun")):  # fmt: skip
        row = latency.get(key)
        if not row or not crun:
            continue
        parts = []
        verdicts = []
        for mode in ("warm", "idle"):
            mine, anchor = _summary(row[mode]), _summary(crun[mode])
            ratio = mine.ratio(anchor) if mine else None
            if ratio is None:
                continue
            parts.append(f"{mode}: {ratio:.2f}x")
            verdicts.append("met" if ratio <= limit else f"missed by {ratio / limit:.2f}x")
        out.append((text, ", ".join(parts), "; ".join(verdicts)))
    conc = results.get("concurrency", [])
    sizes = sorted({r["n"] for r in conc})
    if sizes:
        n = sizes[-1]
        api = next((r for r in conc if r["n"] == n and r["runtime"] == "codex32 API"), None)
        crun_n = next((r for r in conc if r["n"] == n and r["runtime"] == "crun"), None)
        if api and crun_n and api["running"] and crun_n["running"]:
            a, c = api["running"]["median"], crun_n["running"]["median"]
            ratio = a / c if c else float("inf")
            verdict = "met" if ratio <= 1.0 else f"missed by {ratio:.2f}x"
            out.append((f"{n} concurrent starts no slower than crun",
                        f"{fmt_ms(a)} ms vs {fmt_ms(c)} ms", verdict))  # fmt: skip
    memory = results.get("memory", [])
    for mode in dict.fromkeys(r.get("mode", "fork server") for r in memory):
        last = max((r for r in memory if r.get("mode", "fork server") == mode),
                   key=lambda r: r["n"])  # fmt: skip
        uss = last["per_container_uss"]
        verdict = "met" if uss <= 3 * MB else f"missed by {uss / (3 * MB):.2f}x"
        out.append((f"≤ 3 MB USS of engine memory per running container ({mode} monitors)",
                    f"{fmt_bytes(uss)} at {last['n']}", verdict))  # fmt: skip
    return out


def render(results: dict[str, Any]) -> str:
    parts = ["# Codex-32 bench results", ""]
    facts = results.get("host", {})
    parts += [f"* {k}: {v}" for k, v in facts.items()]
    parts.append(f"* options: {results.get('options', '')}")
    load = results.get("load") or {}
    if load:
        each = ", ".join(f"{section} {value}" for section, value in load.items())
        parts.append(f"* 1-minute load average before -> after each section: {each}")
    verdicts = targets(results)
    if verdicts:
        parts += ["", "## Targets", "", table(["target", "measured", "verdict"], verdicts)]
    if "latency" in results:
        parts += ["", "## 1. Start-to-exit latency of /bin/true (ms)", "",
                  latency_section(results["latency"])]  # fmt: skip
    if "concurrency" in results:
        parts += ["", "## 2. N containers of `sleep 1` started at once", "",
                  concurrency_section(results["concurrency"])]  # fmt: skip
    if "memory" in results:
        parts += ["", "## 3. Engine-side memory per running container", "",
                  memory_section(results["memory"])]  # fmt: skip
    if "breakdown" in results:
        parts += ["", "## 4. Where one start spends its time", "",
                  breakdown_section(results["breakdown"], results.get("imports"))]  # fmt: skip
    attach = results.get("cgroup_attach")
    if attach:
        rows = [
            [mode, fmt_ms(attach[mode]["round_median"]), fmt_ms(attach[mode]["first_write_median"]),
             f"{attach[mode]['write_median'] * 1000:.0f} us"]
            for mode in ("warm", "idle")
        ]  # fmt: skip
        parts += ["", f"Moving a process into cgroups, {attach['hierarchies']} v1 hierarchies, "
                  "no runtime (one `write` to `cgroup.procs` each):", "",
                  table(["rounds", "all hierarchies, ms", "first write, ms",
                         "median write"], rows)]  # fmt: skip
    errors = results.get("errors") or {}
    if errors:
        parts += ["", "## Sections that failed", ""]
        for section, text in errors.items():
            parts += [f"### {section}", "", "```", text.rstrip(), "```", ""]
    problems = results.get("cleanup_problems") or []
    if problems:
        parts += ["", "## Clean-up problems", "", *(f"* {p}" for p in problems)]
    return "\n".join(parts) + "\n"

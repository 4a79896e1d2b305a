"""Read-only commands: ps, inspect, logs, events, images, build."""

from __future__ import annotations

import json
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from codex32.cli._common import ago, each_ref, engine, guard, table

if TYPE_CHECKING:
    from codex32 import Container, LogEntry

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def list_containers(
    all_: Annotated[bool, typer.Option("-a", "--all", help="Show stopped ones too.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only ids.")] = False,
    json_output: Json = False,
) -> None:
    """List containers."""
    found = guard(partial(engine().containers.list, all=all_))
    if all_:  # one damaged record is named, and the others still list
        for damaged in guard(engine().containers.damaged):
            typer.echo(f"codex32: warning: {damaged}", err=True)
    if quiet:
        for c in found:
            typer.echo(c.short_id)
        return
    if json_output:
        typer.echo(json.dumps([c.record.to_dict() for c in found], indent=2))
        return
    rows = [["CONTAINER ID", "IMAGE", "CREATED", "STATUS", "NAME"]]
    for c in found:
        rows.append([c.short_id, c.record.image, ago(c.record.created_at), _status(c), c.name])
    table(rows)


def _status(container: Container) -> str:
    r = container.record
    if r.status.value == "running":
        return f"Up {ago(r.started_at).removesuffix(' ago')}"
    if r.status.value == "exited":
        return f"Exited ({r.exit_code}) {ago(r.finished_at)}"
    return r.status.value.capitalize()


def inspect(
    containers: Annotated[list[str], typer.Argument(help="Container names or ids.")],
    _json_output: Annotated[
        bool, typer.Option("--json", help="Accepted for scripts: the output is always JSON.")
    ] = False,
) -> None:
    """Print containers' full records (state, config, paths) as JSON.

    As Docker: the ones found are printed, and each one not found is an error line.
    """
    eng = engine()
    out: list[dict[str, Any]] = []

    def describe(ref: str) -> dict[str, Any]:
        c = eng.containers.get(ref)
        return {
            "State": c.record.to_dict(),
            "Config": c.config.model_dump(mode="json"),
            "NetworkSettings": c.network_settings(),
        }

    failed = each_ref(containers, describe, lambda _ref, found: out.append(found))
    if out or not failed:
        typer.echo(json.dumps(out, indent=2))
    if failed:
        raise typer.Exit(failed)


def logs(
    container: Annotated[str, typer.Argument(help="Container name or id.")],
    follow: Annotated[bool, typer.Option("-f", "--follow")] = False,
    tail: Annotated[str, typer.Option("-n", "--tail", help="Lines from the end, or all.")] = "all",
    since: Annotated[
        str | None, typer.Option("--since", help="Timestamp or relative (10m).")
    ] = None,
    timestamps: Annotated[bool, typer.Option("-t", "--timestamps")] = False,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help='JSON lines on stdout: {"time", "stream", "log"}, as the log file.'
        ),
    ] = False,
) -> None:
    """Print a container's output (stdout to stdout, stderr to stderr)."""
    from codex32 import parse_since

    c = guard(partial(engine().containers.get, container))
    if tail != "all" and not tail.isdigit():
        guard(partial(_raise, ValueError(f"--tail takes a number or 'all', not {tail!r}")))
    lines = None if tail == "all" else int(tail)
    start = guard(partial(parse_since, since, time.time())) if since else None
    if follow:
        follow_output(c, timestamps=timestamps, tail=lines, since=start, json_lines=json_output)
        return
    for entry in guard(partial(c.stream_logs, tail=lines, since=start, follow=False)):
        _write_entry(entry, timestamps=timestamps, json_lines=json_output)
    sys.stdout.flush()


def _write_entry(entry: LogEntry, *, timestamps: bool, json_lines: bool) -> None:
    """One log entry to the stream it came from, or as a JSON line to stdout.

    The JSON has Docker's json-file fields, those of the container's log file:
    ``log`` is the text with its newline, ``time`` RFC 3339 with nanoseconds.
    """
    if json_lines:
        record = {"time": entry.time_text, "stream": entry.stream, "log": entry.text}
        sys.stdout.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        return
    stream = sys.stderr if entry.stream == "stderr" else sys.stdout
    stream.write(entry.format(timestamps))


def _raise(exc: Exception) -> None:
    raise exc


def follow_output(
    container: Container,
    *,
    timestamps: bool,
    tail: int | None,
    since: float | None,
    json_lines: bool = False,
) -> None:
    """Print the log as it grows until the container stops (survives rotation).

    An ``--rm`` container is removed by its monitor as it ends: a container gone
    while followed has ended too, and following stops as it does for an exit.
    """
    for entry in container.stream_logs(tail=tail, since=since):
        _write_entry(entry, timestamps=timestamps, json_lines=json_lines)
        sys.stdout.flush()
        sys.stderr.flush()


def events(
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing new ones.")] = False,
    since: Annotated[str | None, typer.Option("--since")] = None,
    until: Annotated[str | None, typer.Option("--until")] = None,
    filter_: Annotated[
        list[str] | None, typer.Option("--filter", help="container=NAME, event=die, type=...")
    ] = None,
    json_output: Json = False,
) -> None:
    """Print engine events (create, start, die, stop, kill, destroy, ...)."""
    from codex32 import parse_event_filters, parse_since

    eng = engine()
    filters = guard(partial(parse_event_filters, filter_ or []))
    now = time.time()
    start = guard(partial(parse_since, since, now)) if since else None
    end = guard(partial(parse_since, until, now)) if until else None
    stream = guard(partial(eng.events, since=start, until=None if follow else end,
                           filters=filters, follow=follow))  # fmt: skip
    for event in stream:
        if json_output:
            typer.echo(event.to_json())
        else:
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(event.time))
            attrs = ", ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
            typer.echo(
                f"{when} {event.type} {event.action} {event.id[:12]} (name={event.name}"
                + (f", {attrs}" if attrs else "")
                + ")"
            )


def build(name: Annotated[str, typer.Argument(help="Template to (re)build.")]) -> None:
    """Build a rootfs template from its recipe (shipped, or in $CODEX32_TEMPLATES_DIR)."""
    guard(partial(engine().images.build, name))


def _size(n: int | None) -> str:
    if n is None:
        return "unlimited"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def stats(
    containers: Annotated[
        list[str] | None, typer.Argument(help="Names or ids (default: all running).")
    ] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="One sample, then exit.")] = False,
    json_output: Json = False,
) -> None:
    """Live CPU, memory, pids, block I/O and network use of containers."""
    eng = engine()
    if containers:
        targets = [guard(partial(eng.containers.get, ref)) for ref in containers]
    else:
        targets = guard(eng.containers.list)
    previous = {c.id: guard(c.stats) for c in targets}
    while True:
        time.sleep(1.0)
        rows = [["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM PEAK", "PIDS",
                 "BLOCK I/O", "NET I/O"]]  # fmt: skip
        records = []
        for c in targets:
            now = guard(c.stats)
            cpu = now.cpu_percent(previous[c.id])
            previous[c.id] = now
            records.append({"id": c.id, "name": c.name, "cpu_percent": round(cpu, 2),
                            **now.__dict__})  # fmt: skip
            rows.append([
                c.short_id, c.name, f"{cpu:.2f}%",
                f"{_size(now.memory_usage_bytes)} / {_size(now.memory_limit_bytes)}",
                _size(now.memory_peak_bytes) if now.memory_peak_bytes is not None else "-",
                str(now.pids), f"{_size(now.block_read_bytes)} / {_size(now.block_write_bytes)}",
                f"{_size(now.net_rx_bytes)} / {_size(now.net_tx_bytes)}",
            ])  # fmt: skip
        if json_output:
            typer.echo(json.dumps(records, indent=2))
        else:
            if not no_stream:
                typer.echo("\x1b[2J\x1b[H", nl=False)
            table(rows)
        if no_stream:
            return


def top(
    container: Annotated[str, typer.Argument(help="Container name or id.")],
    json_output: Json = False,
) -> None:
    """The container's processes (host pids), as ``docker top``."""
    c = guard(partial(engine().containers.get, container))
    processes = guard(c.top)
    if json_output:
        typer.echo(json.dumps(processes, indent=2))
        return
    rows = [["PID", "PPID", "USER", "RSS", "COMMAND"]]
    for p in processes:
        rows.append([str(p["pid"]), str(p["ppid"]), str(p["user"]),
                     _size(int(str(p["rss_bytes"]))), str(p["command"])])  # fmt: skip
    table(rows)


def doctor(json_output: Json = False) -> None:
    """What this host offers: cgroup driver and controllers, namespaces, storage.

    ``--json``: the same facts as one object, for scripts and monitoring.
    """
    report = guard(engine().info)
    if json_output:
        typer.echo(json.dumps(report, indent=2))
        return
    cgroup = report["cgroup"]
    typer.echo(cgroup["description"])
    if cgroup["usable_controllers"] is not None:
        typer.echo(f"controllers usable for containers: {', '.join(cgroup['usable_controllers'])}")
    else:
        typer.echo(f"no cgroup driver: {cgroup['unavailable']}")
    typer.echo("limits (enforceable on this host; --limits best-effort drops the others):")
    table([["LIMIT", "ENFORCEABLE", "WHY"]]
          + [[row["limit"], "yes" if row["enforceable"] else "no", row["reason"]]
             for row in cgroup["limits"]])  # fmt: skip
    typer.echo(f"cgroup parent: {cgroup['parent']}")
    typer.echo(f"storage: {report['storage_dir']}")
    typer.echo(f"templates: {report['templates_dir']}")
    typer.echo(f"default isolation: {report['default_isolation']}")

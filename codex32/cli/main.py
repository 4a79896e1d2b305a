"""The ``codex32`` command line: parse, call the public API, format. Nothing else.

Errors are one line on stderr (``--debug`` for the traceback) and Docker's exit
codes: 125 when the engine fails, 126 when the command cannot be executed, 127
when it is not found, else the container's own exit code.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from codex32 import ContainerConfig, ContainerEngine

app = typer.Typer(
    name="codex32",
    help="Codex-32: run bots in Linux containers (namespaces, overlay rootfs, cgroups).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state: dict[str, bool] = {"debug": False}

_CONTAINER_CONTEXT = {"allow_interspersed_args": False}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


def _fail(message: str, code: int = 125) -> NoReturn:
    typer.echo(f"codex32: error: {message}", err=True)
    raise typer.Exit(code)


def _guard(action: Callable[[], Any]) -> Any:
    """Run ``action``; turn expected errors into one clear line and an exit code."""
    from pydantic import ValidationError

    from codex32 import Codex32Error, LaunchError

    try:
        return action()
    except LaunchError as exc:
        if _state["debug"]:
            raise
        _fail(str(exc), exc.exit_code)
    except Codex32Error as exc:
        if _state["debug"]:
            raise
        _fail(str(exc))
    except ValidationError as exc:
        if _state["debug"]:
            raise
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        _fail(f"invalid configuration: {problems}")
    except ValueError as exc:
        if _state["debug"]:
            raise
        _fail(str(exc))


def _engine() -> ContainerEngine:
    from codex32 import ContainerEngine

    return ContainerEngine()


def _parse_env(pairs: list[str], env_files: list[str]) -> dict[str, str]:
    """Docker's ``-e NAME=VALUE``, ``-e NAME`` (from the caller's environment), --env-file."""
    env: dict[str, str] = {}
    lines: list[str] = []
    for path in env_files:
        try:
            with open(path) as f:
                lines += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise ValueError(f"cannot read --env-file {path}: {exc.strerror}") from None
    for item in [*lines, *pairs]:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def _container_command(plan_only: bool) -> Callable[..., None]:
    """``run`` and ``plan`` take the same options; ``plan`` prints instead of running."""

    def command(
        image: Annotated[str, typer.Argument(help="Rootfs template (see `codex32 images`).")],
        args: Annotated[
            list[str] | None, typer.Argument(help="Command and arguments.", show_default=False)
        ] = None,
        rm: Annotated[
            bool, typer.Option("--rm", help="Remove the container when it exits.")
        ] = False,
        interactive: Annotated[
            bool, typer.Option("-i", "--interactive", help="Keep stdin attached.")
        ] = False,
        name: Annotated[str | None, typer.Option("--name", help="Container name.")] = None,
        env: Annotated[list[str] | None, typer.Option("-e", "--env", help="NAME=VALUE")] = None,
        env_file: Annotated[list[str] | None, typer.Option("--env-file")] = None,
        volume: Annotated[
            list[str] | None, typer.Option("-v", "--volume", help="SOURCE:TARGET[:ro]")
        ] = None,
        tmpfs: Annotated[
            list[str] | None, typer.Option("--tmpfs", help="TARGET[:size=64m,mode=1777]")
        ] = None,
        workdir: Annotated[str | None, typer.Option("-w", "--workdir")] = None,
        user: Annotated[str | None, typer.Option("-u", "--user", help="user[:group]")] = None,
        hostname: Annotated[str | None, typer.Option("-h", "--hostname")] = None,
        read_only: Annotated[bool, typer.Option("--read-only")] = False,
        init: Annotated[bool, typer.Option("--init", help="Run a reaper (tini) as PID 1.")] = False,
        isolation: Annotated[
            str | None, typer.Option("--isolation", help="minimal, standard or strict")
        ] = None,
        cap_add: Annotated[list[str] | None, typer.Option("--cap-add")] = None,
        cap_drop: Annotated[list[str] | None, typer.Option("--cap-drop")] = None,
        ulimit: Annotated[
            list[str] | None, typer.Option("--ulimit", help="NAME=SOFT[:HARD]")
        ] = None,
    ) -> None:
        def build() -> ContainerConfig:
            from codex32 import ContainerConfig, IsolationType, TmpfsMount, Ulimit, Volume
            from codex32.settings import Settings

            level = isolation or Settings.from_env().default_isolation.value
            command_args = list(args or [])
            if command_args[:1] == ["--"]:
                command_args = command_args[1:]
            return ContainerConfig(
                name=name,
                image=image,
                command=command_args,
                env=_parse_env(env or [], env_file or []),
                working_dir=workdir,
                user=user,
                hostname=hostname,
                isolation=IsolationType(level.lower()),
                volumes=[Volume.parse(v) for v in volume or []],
                tmpfs=[TmpfsMount.parse(t) for t in tmpfs or []],
                read_only=read_only,
                cap_add=cap_add or [],
                cap_drop=cap_drop or [],
                ulimits=[Ulimit.parse(u) for u in ulimit or []],
                init=init,
                auto_remove=rm,
            )

        config = _guard(build)
        engine = _engine()
        if plan_only:
            typer.echo(_guard(lambda: engine.plan(config)).describe())
            return
        sys.stdout.flush()
        result = _guard(
            lambda: engine.containers.run(
                config,
                stdin=sys.stdin.fileno() if interactive else None,
                stdout=sys.stdout.fileno(),
                stderr=sys.stderr.fileno(),
                forward_signals=True,
            )
        )
        raise typer.Exit(result.exit_code)

    command.__doc__ = (
        "Print the set-up plan a container would run (nothing is created)."
        if plan_only
        else "Run a command in a new container."
    )
    return command


app.command("run", context_settings=_CONTAINER_CONTEXT)(_container_command(plan_only=False))
app.command("plan", context_settings=_CONTAINER_CONTEXT)(_container_command(plan_only=True))


@app.command("images")
def images(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the rootfs templates."""
    found = _guard(partial(_list_images))
    if json_output:
        typer.echo(json.dumps([i.model_dump() for i in found], indent=2))
        return
    rows = [["TEMPLATE", "BUILT", "DESCRIPTION"]]
    rows += [[i.name, "yes" if i.built else "no", i.description] for i in found]
    _table(rows)


def _list_images() -> list[Any]:
    return _engine().images.list()


@app.command("build")
def build(name: Annotated[str, typer.Argument(help="Template to (re)build.")]) -> None:
    """Build a rootfs template from its recipe in rootfs-templates/."""
    _guard(lambda: _engine().images.build(name))


@app.command("ps")
@app.command("list")
def list_containers(
    all_: Annotated[bool, typer.Option("-a", "--all", help="Show stopped ones too.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only ids.")] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List containers."""
    found = _guard(lambda: _engine().containers.list(all=all_))
    if quiet:
        for c in found:
            typer.echo(c.short_id)
        return
    if json_output:
        typer.echo(json.dumps([c.record.to_dict() for c in found], indent=2))
        return
    rows = [["CONTAINER ID", "IMAGE", "CREATED", "STATUS", "NAME"]]
    for c in found:
        r = c.record
        status = r.status.value + (f" ({r.exit_code})" if r.exit_code is not None else "")
        rows.append([c.short_id, r.image, _ago(r.created_at), status, c.name])
    _table(rows)


@app.command("rm")
@app.command("remove")
def remove(
    containers: Annotated[list[str], typer.Argument(help="Names or ids.")],
    force: Annotated[bool, typer.Option("-f", "--force", help="Kill it if running.")] = False,
) -> None:
    """Remove containers."""
    engine = _engine()
    for ref in containers:
        _guard(partial(_remove_one, engine, ref, force))
        typer.echo(ref)


def _remove_one(engine: ContainerEngine, ref: str, force: bool) -> None:
    engine.containers.get(ref).remove(force=force)


def _ago(timestamp: float) -> str:
    seconds = int(time.time() - timestamp)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} seconds ago"


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main() -> None:
    """Console-script entry point: an unexpected error is one line unless --debug."""
    try:
        app()
    except Exception as exc:
        if _state["debug"]:
            raise
        typer.echo(
            f"codex32: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
            "for the traceback)",
            err=True,
        )
        sys.exit(125)

"""The ``codex32`` command line: parse, call the public API, format. Nothing else.

Errors are one line on stderr (``--debug`` for the traceback) and Docker's exit
codes: 125 when the engine fails, 126 when the command cannot be executed, 127
when it is not found, else the container's own exit code.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from codex32.cli import bot, network, verbs, views
from codex32.cli._common import state
from codex32.cli._usage import UsageError, UsageGroup
from codex32.cli._usage import report as report_usage_error
from codex32.cli.run import Action, container_command
from codex32.cli.serve import serve

app = typer.Typer(
    name="codex32",
    help="Codex-32: run bots in Linux containers (namespaces, overlay rootfs, cgroups).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=UsageGroup,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"codex32 {version('codex32')}")
        except PackageNotFoundError:
            typer.echo("codex32 (not installed)")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    cgroup_parent: Annotated[
        str | None,
        typer.Option(
            "--cgroup-parent",
            metavar="PATH",
            help="Cgroup under which containers' cgroups go: relative to the engine's own "
            "cgroup, or absolute from the hierarchy's root (default: $CODEX32_CGROUP_PARENT, "
            "else codex32).",
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            "-H",
            envvar="CODEX32_HOST",
            metavar="URL",
            help="Run the verb through the host service: unix:///run/codex32/codex32.sock, "
            "or tcp://HOST:PORT with CODEX32_TOKEN (default: in-process).",
        ),
    ] = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    state.debug = debug
    state.cgroup_parent = cgroup_parent
    state.host = host


_PASS_THROUGH = {"allow_interspersed_args": False}
for _action in Action:
    app.command(_action.value, context_settings=_PASS_THROUGH)(container_command(_action))

app.command("start")(verbs.start)
app.command("stop")(verbs.stop)
app.command("restart")(verbs.restart)
app.command("kill")(verbs.kill)
app.command("wait")(verbs.wait)
app.command("rm")(verbs.remove)
app.command("remove", hidden=True)(verbs.remove)
app.command("prune")(verbs.prune)
app.command("exec", context_settings=_PASS_THROUGH)(verbs.exec_)
app.command("export")(verbs.export)
app.command("ps")(views.list_containers)
app.command("list", hidden=True)(views.list_containers)
app.command("inspect")(views.inspect)
app.command("logs")(views.logs)
app.command("events")(views.events)
app.command("images")(views.images)
app.command("build")(views.build)
app.command("pause")(verbs.pause)
app.command("unpause")(verbs.unpause)
app.command("stats")(views.stats)
app.command("top")(views.top)
app.command("doctor")(views.doctor)
app.command("info", hidden=True)(views.doctor)
app.add_typer(network.app, name="network")
app.command("serve")(serve)
app.add_typer(bot.app, name="bot")
app.add_typer(bot.db_app, name="db")


def main() -> None:
    """Console-script entry point: every error is one line (the traceback with --debug).

    Click runs without its standalone mode, so that usage errors reach us: they are
    one line and exit code 125, as Docker's; ``--help`` still prints and exits 0. The
    program is ``codex32`` however it was started (``python -m codex32`` too).
    """
    try:
        code = app(prog_name="codex32", standalone_mode=False)
    except UsageError as exc:
        sys.exit(report_usage_error(exc))
    except typer.Abort:  # end of input at a prompt, or Ctrl-C with older Click
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except Exception as exc:
        if state.debug:
            raise
        typer.echo(
            f"codex32: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
            "for the traceback)",
            err=True,
        )
        sys.exit(125)
    # The command's return value (None), or the code of a typer.Exit it raised.
    sys.exit(code if isinstance(code, int) else 0)

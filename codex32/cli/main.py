"""The ``codex32`` command line: parse, call the public API, format. Nothing else.

Errors are one line on stderr (``--debug`` for the traceback) and Docker's exit
codes: 125 when the engine fails, 126 when the command cannot be executed, 127
when it is not found, else the container's own exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from codex32.cli import bot, images, network, verbs, views
from codex32.cli._common import state
from codex32.cli._usage import UsageError, UsageGroup
from codex32.cli._usage import report as report_usage_error
from codex32.cli.entry import _verb
from codex32.cli.run import Action, container_command
from codex32.cli.serve import serve


def _typer() -> typer.Typer:
    return typer.Typer(
        name="codex32",
        help="Codex-32: run bots in Linux containers (namespaces, overlay rootfs, cgroups).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        cls=UsageGroup,
    )


app = _typer()


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"codex32 {version('codex32')}")
        except PackageNotFoundError:
            typer.echo("codex32 (not installed)")
        raise typer.Exit()


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
#: (verb, function, options of ``Typer.command``), in the order ``--help`` lists them.
_COMMANDS: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
    *((a.value, container_command(a), {"context_settings": _PASS_THROUGH}) for a in Action),
    ("start", verbs.start, {}),
    ("stop", verbs.stop, {}),
    ("restart", verbs.restart, {}),
    ("kill", verbs.kill, {}),
    ("wait", verbs.wait, {}),
    ("rm", verbs.remove, {}),
    ("remove", verbs.remove, {"hidden": True}),
    ("prune", verbs.prune, {}),
    ("exec", verbs.exec_, {"context_settings": _PASS_THROUGH}),
    ("export", verbs.export, {}),
    ("ps", views.list_containers, {}),
    ("list", views.list_containers, {"hidden": True}),
    ("inspect", views.inspect, {}),
    ("logs", views.logs, {}),
    ("events", views.events, {}),
    ("pull", images.pull, {}),
    ("load", images.load, {}),
    ("save", images.save, {}),
    ("images", images.list_images, {}),
    ("rmi", images.remove, {}),
    ("tag", images.tag, {}),
    ("commit", images.commit, {}),
    ("login", images.login, {}),
    ("logout", images.logout, {}),
    ("build", views.build, {}),
    ("pause", verbs.pause, {}),
    ("unpause", verbs.unpause, {}),
    ("stats", views.stats, {}),
    ("top", views.top, {}),
    ("doctor", views.doctor, {}),
    ("info", views.doctor, {"hidden": True}),
    ("serve", serve, {}),
]
#: Verb groups: ``codex32 network ls``, ``image``, ``bot``, ``db``.
_GROUPS: dict[str, typer.Typer] = {
    "network": network.app,
    "image": images.image_app,
    "bot": bot.app,
    "db": bot.db_app,
}


def _register(target: typer.Typer, only: str | None = None) -> None:
    """Give ``target`` the global options and every verb (or only the verb ``only``)."""
    target.callback()(_global)
    for name, function, options in _COMMANDS:
        if only is None or name == only:
            target.command(name, **options)(function)
    for name, group in _GROUPS.items():
        if only is None or only == name:
            target.add_typer(group, name=name)


_register(app)


def _app_for(args: list[str]) -> typer.Typer:
    """The app with only the verb ``args`` name, or the whole app.

    Typer turns every registered verb into a Click command (signature, type hints) at
    each call: ~30 ms for all of them, a few for one. A known verb gets an app with it
    alone (its parsing, help and errors are the same); anything else (no verb, a
    misspelt one, ``--help``) the whole app, which lists and suggests verbs.
    """
    verb = _verb(args)
    if verb is None or verb not in {name for name, _f, _o in _COMMANDS} | set(_GROUPS):
        return app
    single = _typer()
    _register(single, only=verb)
    return single


def main() -> None:
    """Console-script entry point: every error is one line (the traceback with --debug).

    Click runs without its standalone mode, so that usage errors reach us: they are
    one line and exit code 125, as Docker's; ``--help`` still prints and exits 0. The
    program is ``codex32`` however it was started (``python -m codex32`` too).
    """
    try:
        code = _app_for(sys.argv[1:])(prog_name="codex32", standalone_mode=False)
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

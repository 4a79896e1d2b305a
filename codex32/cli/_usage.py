"""Usage errors as Docker reports them: one line on stderr, then exit code 125.

Click (vendored by typer, or a dependency of older typers) prints a usage box and
exits 2; scripts written for Docker expect one line naming the problem, a pointer
to the help, and 125, the code of an error that is not the container's.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

#: Click's exceptions, wherever this typer keeps them (only BadParameter is public).
_click_errors = importlib.import_module(typer.BadParameter.__module__)
UsageError: type[Exception] = _click_errors.UsageError
_NoSuchOption: type[Exception] = _click_errors.NoSuchOption
_MissingParameter: type[Exception] = _click_errors.MissingParameter
_BadParameter: type[Exception] = _click_errors.BadParameter
_BadOptionUsage: type[Exception] = _click_errors.BadOptionUsage
#: A bare group (``codex32``, ``codex32 network``): its help is the answer. Click < 8.2
#: has no such error (it prints the help and exits 0 itself).
_NoArgsIsHelp: type[Exception] | None = getattr(_click_errors, "NoArgsIsHelpError", None)

USAGE_EXIT_CODE = 125


class UsageGroup(TyperGroup):
    """Typer's group; a usage error found while a subcommand's arguments are parsed
    (an option without its value) keeps the group's context, which names the
    subcommand, so the hint can point at the subcommand's help."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            error: Any = exc
            if error.ctx is None:
                error.ctx = ctx
            raise


def report(exc: Exception) -> int:
    """Print a usage error (one line on stderr); return the exit code.

    A bare group is not an error: its help goes to stdout (typer's rich help is
    printed as the error is made) and the code is 0, as Docker's.
    """
    if _NoArgsIsHelp is not None and isinstance(exc, _NoArgsIsHelp):
        text = str(getattr(exc, "format_message", lambda: "")())  # empty if rich printed it
        if text.strip():
            typer.echo(text)
        return 0
    typer.echo(usage_line(exc), err=True)
    return USAGE_EXIT_CODE


def usage_line(exc: Exception) -> str:
    """``codex32: unknown flag: --bogus. See 'codex32 run --help'.`` for a usage error."""
    path = _command_path(getattr(exc, "ctx", None))
    problem = " ".join(_problem(exc, path).split())  # one line, whatever Click wrote
    end = "" if problem.endswith((".", "?", "!")) else "."
    return f"codex32: {problem}{end} See '{path} --help'."


def _command_path(ctx: Any) -> str:
    """The command the error is about: ``codex32 stop``.

    An error from parsing a subcommand's arguments comes with the group's context
    (see ``UsageGroup``), which names the subcommand being invoked.
    """
    if ctx is None:
        return "codex32"
    path = str(ctx.command_path)
    subcommand = getattr(ctx, "invoked_subcommand", None)
    return f"{path} {subcommand}" if subcommand else path


def _problem(exc: Exception, path: str) -> str:
    """Docker's wording where it has one, else Click's message."""
    param: Any = getattr(exc, "param", None)
    if isinstance(exc, _NoSuchOption):
        name = str(getattr(exc, "option_name", ""))
        if name.startswith("--") or len(name) < 2:
            return f"unknown flag: {name}"
        return f"unknown shorthand flag: {name[1:]!r} in {name}"
    if isinstance(exc, _MissingParameter) and param is not None:
        if param.param_type_name == "argument":
            name = str(param.name).upper()
            if param.nargs == -1:
                return f'"{path}" requires at least 1 argument ({name})'
            return f'"{path}" requires the {name} argument'
        return f"required flag {_flag(param)} not set"
    if isinstance(exc, _BadOptionUsage) and "requires" in str(getattr(exc, "message", "")):
        return f"flag needs an argument: {getattr(exc, 'option_name', '')}"
    if isinstance(exc, _BadParameter) and param is not None:
        what = _flag(param) if param.param_type_name == "option" else str(param.name).upper()
        return f"invalid value for {what}: {_lower_first(str(getattr(exc, 'message', exc)))}"
    format_message = getattr(exc, "format_message", None)
    return _lower_first(format_message() if callable(format_message) else str(exc))


def _flag(param: Any) -> str:
    """``-t/--time``, as the command's help names it."""
    return "/".join(param.opts) or str(param.name)


def _lower_first(text: str) -> str:
    """``No such command`` -> ``no such command`` (an acronym such as ``IP`` is kept)."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text

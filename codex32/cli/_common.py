"""What every CLI command shares: the engine, one-line errors, tables."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from codex32 import ContainerEngine

T = TypeVar("T")


@dataclass
class GlobalOptions:
    """The root command's options, for every command of this invocation."""

    debug: bool = False
    cgroup_parent: str | None = None  # --cgroup-parent, else CODEX32_CGROUP_PARENT
    host: str | None = None  # --host / CODEX32_HOST: verbs go through the service


state = GlobalOptions()


def fail(message: str, code: int = 125) -> NoReturn:
    """Print one error line and exit with ``code`` (Docker's 125 by default)."""
    typer.echo(f"codex32: error: {message}", err=True)
    raise typer.Exit(code)


def guard(action: Callable[[], T]) -> T:
    """Run ``action``; expected errors become one clear line and an exit code."""
    from codex32 import Codex32Error, LaunchError

    try:
        return action()
    except LaunchError as exc:
        if state.debug:
            raise
        fail(str(exc), exc.exit_code)
    except Codex32Error as exc:
        if state.debug:
            raise
        fail(str(exc))
    except (ValueError, TimeoutError) as exc:
        if state.debug:
            raise
        problems = _validation_problems(exc)
        fail(f"invalid configuration: {problems}" if problems is not None else str(exc))


def _validation_problems(exc: Exception) -> str | None:
    """pydantic's errors as ``loc: msg; ...``, or None for another error.

    pydantic's ``ValidationError`` is a ``ValueError``; it is told apart without
    importing pydantic, which a client through ``--host`` does not load (a model
    that was never built cannot have failed)."""
    core = sys.modules.get("pydantic_core")
    if core is None or not isinstance(exc, core.ValidationError):
        return None
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
    )


def each_ref(refs: list[str], action: Callable[[str], T], done: Callable[[str, T], object]) -> int:
    """Run ``action`` on each ref, then ``done`` with its result; go on past failures.

    Each failure is one line on stderr (as ``guard`` prints it). The exit code to
    end with: 0 if none failed, the failure's own code if ``refs`` is one (as for
    any single command), else 1, as Docker's for several containers.
    """
    codes = []
    for ref in refs:
        try:
            result = guard(partial(action, ref))
        except typer.Exit as exc:
            codes.append(exc.exit_code)
            continue
        done(ref, result)
    if not codes:
        return 0
    return codes[0] if len(refs) == 1 else 1


def engine() -> ContainerEngine:
    """The engine for this invocation (settings from the environment and options), or
    with ``--host`` the service's, through objects of the same shape (``_remote``)."""
    from typing import cast

    if state.host:
        from codex32.cli._remote import RemoteEngine

        host = state.host
        return cast("ContainerEngine", guard(lambda: RemoteEngine(host)))

    from codex32 import ContainerEngine
    from codex32.settings import Settings

    # No sandbox pool: a CLI call starts one container and exits (the service keeps one).
    return guard(
        lambda: ContainerEngine(
            settings=Settings.from_env(cgroup_parent=state.cgroup_parent), sandbox_pool=0
        )
    )


def table(rows: list[list[str]]) -> None:
    """Print rows as left-aligned columns (the first row is the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def ago(timestamp: float | None) -> str:
    """``5 minutes ago``."""
    if timestamp is None:
        return "-"
    seconds = int(time.time() - timestamp)
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} seconds ago"


def flush_stdout() -> None:
    """Flush Python's buffer before a child writes to the same descriptor."""
    sys.stdout.flush()

"""The ``codex32`` console script: start what a container start needs, then the CLI.

Standard library only up to the hand-over: for the verbs that start a container, a
fork server is started before typer and pydantic are imported, so that its start-up
overlaps theirs (see ``_launch.prestart_fork_server``).
"""

from __future__ import annotations

import contextlib
import sys

#: The verbs that start a container (and so a monitor).
_STARTING_VERBS = frozenset({"run", "start", "restart"})


def _verb(args: list[str]) -> str | None:
    """The first argument that is not a global option (``--debug``)."""
    return next((a for a in args if not a.startswith("-")), None)


def main() -> None:
    """Console-script entry point."""
    if _verb(sys.argv[1:]) in _STARTING_VERBS:
        from .._launch import prestart_fork_server

        # On failure the engine tries again when it needs the server, and reports it.
        with contextlib.suppress(OSError):
            prestart_fork_server()
    from .main import main as cli_main

    cli_main()

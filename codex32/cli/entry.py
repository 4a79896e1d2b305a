"""The ``codex32`` console script: start what a container start needs, then the CLI.

Standard library only up to the hand-over: for the verbs that start a container, a
fork server is started before typer and pydantic are imported, so that its start-up
overlaps theirs (see ``_launch.prestart_fork_server``); ``run`` through the host
service goes the thin way (``_remote_run``), without typer and pydantic.
"""

from __future__ import annotations

import contextlib
import sys

#: The verbs that start a container (and so a monitor).
_STARTING_VERBS = frozenset({"run", "start", "restart"})
#: Global options followed by a value (``--cgroup-parent PATH``), which is no verb.
_VALUE_OPTIONS = frozenset({"--cgroup-parent", "--host", "-H"})


def _verb(args: list[str]) -> str | None:
    """The first argument that is neither a global option nor an option's value."""
    words = iter(args)
    for word in words:
        if word in _VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main() -> None:
    """Console-script entry point."""
    import os

    remote = "--host" in sys.argv or "-H" in sys.argv or bool(os.environ.get("CODEX32_HOST"))
    remote = remote or any(word.startswith("--host=") for word in sys.argv[1:])
    verb = _verb(sys.argv[1:])
    if verb == "run" and remote:
        from codex32.cli._remote_run import main as run_through_service

        code = run_through_service(sys.argv[1:])
        if code is not None:
            sys.exit(code)
    if verb in _STARTING_VERBS and not remote:
        from codex32 import prestart_fork_server

        # On failure the engine tries again when it needs the server, and reports it.
        with contextlib.suppress(OSError):
            prestart_fork_server()
    from codex32.cli.main import main as cli_main

    cli_main()

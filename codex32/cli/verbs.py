"""Lifecycle verbs: start, stop, restart, kill, wait, rm, prune."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from codex32.cli._common import each_ref, engine, guard
from codex32.cli._usage import UsageError

if TYPE_CHECKING:
    from codex32 import Container

Names = Annotated[list[str], typer.Argument(help="Container names or ids.")]


def _each(refs: list[str], verb: Callable[[Container], object], show: bool = False) -> None:
    """Apply ``verb`` to each container; print its name (or the verb's result).

    As Docker: a failure is one line on stderr and the others are still done; the
    exit code is then 1, or the failure's own code when only one was named.
    """
    eng = engine()

    def apply(ref: str) -> object:
        return verb(eng.containers.get(ref))

    failed = each_ref(refs, apply, lambda ref, result: typer.echo(result if show else ref))
    if failed:
        raise typer.Exit(failed)


def start(
    containers: Names,
    attach: Annotated[
        bool, typer.Option("-a", "--attach", help="Follow the output until it exits.")
    ] = False,
) -> None:
    """Start created or stopped containers (in the background, or -a: followed)."""
    if not attach:
        _each(containers, lambda c: c.start())
        return
    if len(containers) > 1:
        raise UsageError("you cannot start and attach multiple containers at once")
    import time

    from codex32.cli.views import follow_output

    container = guard(partial(engine().containers.get, containers[0]))
    # Only this start's output: a restarted container's log still holds earlier runs.
    # An entry's time is when the monitor read it, after the start began.
    since = time.time()
    guard(container.start)
    follow_output(container, timestamps=False, tail=None, since=since)
    raise typer.Exit(guard(partial(_exit_code, container)))


def _exit_code(container: Container) -> int:
    """The exit code of the run just followed; 0 if it cannot be known.

    An ``--rm`` container may be removed already; ``wait`` then finds the code in
    its ``die`` event.
    """
    from codex32 import ContainerNotFoundError

    try:
        return container.wait()
    except ContainerNotFoundError:
        return 0


def stop(
    containers: Names,
    time_: Annotated[
        int | None, typer.Option("-t", "--time", help="Seconds before SIGKILL.")
    ] = None,
) -> None:
    """Stop containers: the stop signal, then SIGKILL after the grace time."""
    _each(containers, lambda c: c.stop(time_))


def restart(
    containers: Names,
    time_: Annotated[int | None, typer.Option("-t", "--time")] = None,
) -> None:
    """Stop (if running) and start containers."""
    _each(containers, lambda c: c.restart(time_))


def kill(
    containers: Names,
    signal_: Annotated[str, typer.Option("-s", "--signal")] = "SIGKILL",
) -> None:
    """Send a signal to containers' PID 1."""
    _each(containers, lambda c: c.kill(signal_))


def wait(containers: Names) -> None:
    """Block until containers stop; print their exit codes."""
    _each(containers, lambda c: c.wait(), show=True)


def remove(
    containers: Names,
    force: Annotated[bool, typer.Option("-f", "--force", help="Kill it if running.")] = False,
) -> None:
    """Remove containers (with --force, also one whose record is damaged)."""
    from codex32 import DamagedRecordError

    eng = engine()

    def apply(ref: str) -> object:
        try:
            container = eng.containers.get(ref)
        except DamagedRecordError:
            if not force:
                raise
            return eng.containers.remove_damaged(ref)
        container.remove(force=force)
        return None

    failed = each_ref(containers, apply, lambda ref, _result: typer.echo(ref))
    if failed:
        raise typer.Exit(failed)


def prune() -> None:
    """Remove every stopped container."""
    for container_id in guard(engine().containers.prune):
        typer.echo(container_id)


def exec_(
    container: Annotated[str, typer.Argument(help="Container name or id.")],
    command: Annotated[list[str], typer.Argument(help="Command and arguments.")],
    interactive: Annotated[bool, typer.Option("-i", "--interactive")] = False,
    tty: Annotated[bool, typer.Option("-t", "--tty", help="Allocate a terminal.")] = False,
    env: Annotated[list[str] | None, typer.Option("-e", "--env", help="NAME=VALUE")] = None,
    user: Annotated[str | None, typer.Option("-u", "--user")] = None,
    workdir: Annotated[str | None, typer.Option("-w", "--workdir")] = None,
) -> None:
    """Run a command in a running container, confined as its command is."""
    import sys

    from codex32.cli._parse import parse_env
    from codex32.cli.run import raw_terminal

    args = command[1:] if command[:1] == ["--"] else command
    target = guard(partial(engine().containers.get, container))
    sys.stdout.flush()
    with raw_terminal(tty and interactive):
        result = guard(
            partial(
                target.exec_run,
                args,
                env=parse_env(env or [], []),
                user=user,
                workdir=workdir,
                stdin=sys.stdin.fileno() if interactive else None,
                stdout=sys.stdout.fileno(),
                stderr=sys.stderr.fileno(),
                tty=tty,
            )
        )
    raise typer.Exit(result.exit_code)


def export(
    container: Annotated[str, typer.Argument(help="Container name or id.")],
    output: Annotated[str, typer.Option("-o", "--output", help="The file to write.")],
    state_only: Annotated[
        bool, typer.Option("--state", help="Write its config and state as JSON instead.")
    ] = False,
) -> None:
    """Export a container's filesystem as a tar (or, with --state, its record as JSON)."""
    target = guard(partial(engine().containers.get, container))
    if state_only:
        import json

        record = {"State": target.record.to_dict(), "Config": target.config.model_dump(mode="json")}
        try:
            with open(output, "w") as f:
                json.dump(record, f, indent=2)
        except OSError as exc:
            guard(partial(_raise, ValueError(f"cannot write {output}: {exc.strerror}")))
        return
    guard(partial(target.export, output))


def _raise(exc: Exception) -> None:
    raise exc


def pause(containers: Names) -> None:
    """Freeze every process of containers (cgroup freezer)."""
    _each(containers, lambda c: c.pause())


def unpause(containers: Names) -> None:
    """Thaw paused containers."""
    _each(containers, lambda c: c.unpause())

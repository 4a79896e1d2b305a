"""``run``, ``create`` and ``plan``: one set of Docker-style options, three actions."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from typing import TYPE_CHECKING, Annotated

import typer

from codex32.cli._common import engine, flush_stdout, guard
from codex32.cli._parse import parse_env

if TYPE_CHECKING:
    from codex32 import ContainerConfig, DeviceRate


class Action(Enum):
    """What the command does with the config."""

    RUN = "run"
    CREATE = "create"
    PLAN = "plan"


def device_rates(flag: str, specs: list[str] | None) -> list[DeviceRate]:
    """Parse one ``--device-*`` flag's ``PATH:RATE`` values; an error names the flag."""
    from pydantic import ValidationError

    from codex32 import DeviceRate

    rates = []
    for spec in specs or []:
        try:
            rates.append(DeviceRate.parse(spec, iops=flag.endswith("-iops")))
        except ValidationError as exc:
            reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise ValueError(f"{flag} {spec!r}: {reason}") from None
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    return rates


def container_command(action: Action) -> Callable[..., None]:
    """The command function for ``action`` (typer reads its signature)."""

    def command(
        image: Annotated[
            str | None,
            typer.Argument(
                help="Image, rootfs template (see `codex32 images`) or a bot's .py file."
            ),
        ] = None,
        args: Annotated[
            list[str] | None, typer.Argument(help="Command and arguments.", show_default=False)
        ] = None,
        image_option: Annotated[
            str | None, typer.Option("--image", help="Same as the IMAGE argument.")
        ] = None,
        detach: Annotated[
            bool, typer.Option("-d", "--detach", help="Run in the background; print the id.")
        ] = False,
        rm: Annotated[
            bool, typer.Option("--rm", help="Remove the container when it exits.")
        ] = False,
        interactive: Annotated[
            bool, typer.Option("-i", "--interactive", help="Keep stdin attached.")
        ] = False,
        tty: Annotated[bool, typer.Option("-t", "--tty", help="Allocate a terminal.")] = False,
        name: Annotated[str | None, typer.Option("--name", help="Container name.")] = None,
        env: Annotated[list[str] | None, typer.Option("-e", "--env", help="NAME=VALUE")] = None,
        env_file: Annotated[list[str] | None, typer.Option("--env-file")] = None,
        volume: Annotated[
            list[str] | None, typer.Option("-v", "--volume", help="SOURCE:TARGET[:ro]")
        ] = None,
        tmpfs: Annotated[
            list[str] | None, typer.Option("--tmpfs", help="TARGET[:size=64m,mode=1777]")
        ] = None,
        device: Annotated[
            list[str] | None,
            typer.Option(
                "--device",
                help="Give a host device: HOST[:CONTAINER[:PERMS]], e.g. /dev/fuse (rwm).",
            ),
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
        restart: Annotated[
            str, typer.Option("--restart", help="no, on-failure[:N], always, unless-stopped")
        ] = "no",
        stop_signal: Annotated[
            str | None, typer.Option("--stop-signal", help="Default: the image's, else SIGTERM.")
        ] = None,
        entrypoint: Annotated[
            str | None,
            typer.Option("--entrypoint", help='Replace the image\'s entrypoint ("" clears it).'),
        ] = None,
        publish_all: Annotated[
            bool, typer.Option("-P", "--publish-all", help="Publish the image's exposed ports.")
        ] = False,
        stop_timeout: Annotated[int, typer.Option("--stop-timeout")] = 10,
        log_max_size: Annotated[
            str | None,
            typer.Option("--log-max-size", help="Rotate the log at this size; -1: never [20m]."),
        ] = None,
        log_max_files: Annotated[
            int | None, typer.Option("--log-max-files", help="Log files kept with rotation [5].")
        ] = None,
        cpus: Annotated[float | None, typer.Option("--cpus", help="CPU quota in cores.")] = None,
        cpu_shares: Annotated[int | None, typer.Option("--cpu-shares")] = None,
        cpuset_cpus: Annotated[str | None, typer.Option("--cpuset-cpus", help="e.g. 0-1")] = None,
        memory: Annotated[str | None, typer.Option("-m", "--memory", help="e.g. 256m")] = None,
        memory_swap: Annotated[
            str | None, typer.Option("--memory-swap", help="memory + swap; -1: unlimited")
        ] = None,
        memory_reservation: Annotated[str | None, typer.Option("--memory-reservation")] = None,
        pids_limit: Annotated[
            int | None,
            typer.Option("--pids-limit", help="Most processes at once; -1: unlimited [2048]."),
        ] = None,
        blkio_weight: Annotated[int | None, typer.Option("--blkio-weight")] = None,
        limits: Annotated[
            str,
            typer.Option(
                "--limits",
                help="enforce: refuse a limit the host cannot enforce; best-effort: drop "
                "it with a warning.",
            ),
        ] = "enforce",
        device_read_bps: Annotated[
            list[str] | None,
            typer.Option("--device-read-bps", help="Read rate of a disk, e.g. /dev/sda:1mb."),
        ] = None,
        device_write_bps: Annotated[
            list[str] | None,
            typer.Option("--device-write-bps", help="Write rate of a disk, e.g. /dev/sda:1mb."),
        ] = None,
        device_read_iops: Annotated[
            list[str] | None,
            typer.Option("--device-read-iops", help="Read IOs/s of a disk, e.g. /dev/sda:100."),
        ] = None,
        device_write_iops: Annotated[
            list[str] | None,
            typer.Option("--device-write-iops", help="Write IOs/s of a disk, e.g. /dev/sda:100."),
        ] = None,
        network: Annotated[
            str | None,
            typer.Option("--network", help="host, none, bridge or a network's name."),
        ] = None,
        publish: Annotated[
            list[str] | None,
            typer.Option(
                "-p", "--publish", help="HOSTPORT:CONTAINERPORT (IP: before, /udp after)."
            ),
        ] = None,
        network_egress_rate: Annotated[
            str | None,
            typer.Option("--network-egress-rate", help="What it may send, e.g. 10mbit."),
        ] = None,
        network_ingress_rate: Annotated[
            str | None,
            typer.Option("--network-ingress-rate", help="What it may receive, e.g. 10mbit."),
        ] = None,
    ) -> None:
        chosen = image_option or image

        def build() -> ContainerConfig:
            from codex32 import (
                ContainerConfig,
                DeviceMapping,
                IsolationType,
                PortMapping,
                ResourceLimits,
                RestartPolicy,
                TmpfsMount,
                Ulimit,
                Volume,
            )
            from codex32.settings import Settings

            if not chosen:
                raise ValueError("name an image: a template (codex32 images) or a .py file")
            # With --image, a first positional word is the command's, not an image.
            command_args = ([image] if image_option and image else []) + list(args or [])
            if command_args[:1] == ["--"]:
                command_args = command_args[1:]
            level = isolation or Settings.from_env().default_isolation.value
            logging: dict[str, str | int] = {}  # unset: the model's defaults
            if log_max_size is not None:
                logging["log_max_size"] = log_max_size
            if log_max_files is not None:
                logging["log_max_files"] = log_max_files
            return ContainerConfig(
                **logging,
                name=name,
                image=os.path.abspath(chosen) if chosen.endswith(".py") else chosen,
                command=command_args,
                env=parse_env(env or [], env_file or []),
                working_dir=workdir,
                user=user,
                hostname=hostname,
                isolation=IsolationType(level.lower()),
                volumes=[Volume.parse(v) for v in volume or []],
                tmpfs=[TmpfsMount.parse(t) for t in tmpfs or []],
                devices=[DeviceMapping.parse(d) for d in device or []],
                read_only=read_only,
                cap_add=cap_add or [],
                cap_drop=cap_drop or [],
                ulimits=[Ulimit.parse(u) for u in ulimit or []],
                init=init,
                auto_remove=rm,
                tty=tty,
                restart_policy=RestartPolicy.parse(restart),
                **({"stop_signal": stop_signal} if stop_signal else {}),
                entrypoint=None if entrypoint is None else [e for e in [entrypoint] if e],
                publish_all=publish_all,
                stop_timeout=stop_timeout,
                resources=ResourceLimits(
                    cpus=cpus,
                    cpu_shares=cpu_shares,
                    cpuset_cpus=cpuset_cpus,
                    memory_bytes=memory,
                    memory_swap_bytes=memory_swap,
                    memory_reservation_bytes=memory_reservation,
                    pids_limit=pids_limit,
                    blkio_weight=blkio_weight,
                    best_effort=_best_effort(limits),
                    device_read_bps=device_rates("--device-read-bps", device_read_bps),
                    device_write_bps=device_rates("--device-write-bps", device_write_bps),
                    device_read_iops=device_rates("--device-read-iops", device_read_iops),
                    device_write_iops=device_rates("--device-write-iops", device_write_iops),
                ),
                network=network,
                ports=[PortMapping.parse(p) for p in publish or []],
                network_egress_rate=network_egress_rate,
                network_ingress_rate=network_ingress_rate,
            )

        config = guard(build)
        eng = engine()
        if action is Action.PLAN:
            typer.echo(guard(lambda: eng.plan(config)).describe())
            return
        if action is Action.CREATE:
            typer.echo(guard(lambda: eng.containers.create(config)).id)
            return
        if detach:
            typer.echo(guard(lambda: eng.containers.run_detached(config)).id)
            return
        flush_stdout()
        with raw_terminal(tty and interactive):
            result = guard(
                lambda: eng.containers.run(
                    config,
                    stdin=sys.stdin.fileno() if interactive else None,
                    stdout=sys.stdout.fileno(),
                    stderr=sys.stderr.fileno(),
                    forward_signals=True,
                )
            )
        raise typer.Exit(result.exit_code)

    command.__doc__ = {
        Action.RUN: "Run a command in a new container.",
        Action.CREATE: "Create a container (start it with `codex32 start`).",
        Action.PLAN: "Print the set-up plan a container would run (nothing is created).",
    }[action]
    return command


def _best_effort(mode: str) -> bool:
    if mode not in ("enforce", "best-effort"):
        raise ValueError(f"--limits {mode!r}: use enforce or best-effort")
    return mode == "best-effort"


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    """Put the caller's terminal in raw mode for ``-it``, and restore it after."""
    if not (enabled and sys.stdin.isatty()):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(sys.stdin.fileno())
    tty.setraw(sys.stdin.fileno())
    try:
        yield
    finally:
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)

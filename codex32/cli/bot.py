"""``codex32 bot ...`` and ``codex32 db ...``: the bot executor on the command line.

Imports of the executor (SQLAlchemy, pydantic, the Kubernetes client) happen inside
the commands, so that ``codex32 ps`` and the other verbs do not pay for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from codex32.cli._common import ago, fail, guard, table

if TYPE_CHECKING:
    from codex32.executor import AdaptiveExecutor, BotStatus

T = TypeVar("T")

app = typer.Typer(
    help="Deploy and manage bots (processes, containers, Kubernetes pods).", no_args_is_help=True
)
db_app = typer.Typer(
    help="The executor's database (SQLite by default, or $DATABASE_URL).", no_args_is_help=True
)

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
BotRef = Annotated[str, typer.Argument(metavar="BOT", help="The bot's name or id.")]


def _run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, imported by the bot verbs only (~12 ms for every other verb)."""
    import asyncio

    return asyncio.run(coroutine)


def _with_executor(action: Callable[[AdaptiveExecutor], Awaitable[T]]) -> T:
    """Run ``action`` with a passive executor (no supervision) on the storage directory."""
    from codex32.executor import AdaptiveExecutor

    async def run() -> T:
        async with AdaptiveExecutor(supervise=False) as executor:
            return await action(executor)

    return guard(lambda: _run_async(run()))


def _ensure_supervisor(storage_dir: Path) -> None:
    """Start a detached supervisor unless one watches the storage directory already."""
    if os.environ.get("CODEX32_BOT_SUPERVISOR", "1") == "0":
        return
    from codex32.executor.supervisor import is_supervised, spawn

    if not is_supervised(storage_dir):
        spawn(storage_dir)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    found = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(f"{what} {value!r} is not KEY=VALUE")
        found[key] = text
    return found


def _health(
    cmd: str | None,
    http: str | None,
    tcp: int | None,
    interval: float,
    timeout: float,
    retries: int,
    start_period: float,
) -> dict[str, Any] | None:
    given = [p for p in (cmd, http, tcp) if p is not None]
    if len(given) > 1:
        fail("give one of --health-cmd, --health-http and --health-tcp")
    if not given:
        return None
    probe: dict[str, Any]
    if cmd is not None:
        import shlex

        probe = {"type": "exec", "command": shlex.split(cmd)}
    elif http is not None:
        port, _, path = http.partition("/")
        if not port.isdigit():
            fail(f"--health-http {http!r}: use PORT[/PATH], e.g. 8080/health")
        probe = {"type": "http", "port": int(port), "path": "/" + path}
    else:
        probe = {"type": "tcp", "port": tcp}
    return {
        "probe": probe,
        "interval": interval,
        "timeout": timeout,
        "retries": retries,
        "start_period": start_period,
    }


def deploy(
    code: Annotated[Path, typer.Argument(help="A .py script, or a directory with main.py.")],
    args: Annotated[
        list[str] | None, typer.Argument(help="The bot's arguments (after --).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Default: the script's name.")] = None,
    kind: Annotated[
        str, typer.Option("--type", "-t", help="process, container or pod.")
    ] = "process",
    isolation: Annotated[
        str | None, typer.Option("--isolation", help="minimal, standard, strict.")
    ] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", "-m", help="Memory limit (128m).")
    ] = None,
    cpus: Annotated[float | None, typer.Option("--cpus", help="CPU quota in cores.")] = None,
    pids_limit: Annotated[int | None, typer.Option("--pids-limit")] = None,
    restart: Annotated[
        str | None, typer.Option("--restart", help="no, on-failure[:N], always, unless-stopped.")
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE.")] = None,
    secret: Annotated[
        list[str] | None, typer.Option("--secret", help="NAME=env:VAR or NAME=file:/path.")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE.")] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Template (container) or image (pod).")
    ] = None,
    network: Annotated[str | None, typer.Option("--network", help="Container network.")] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", help="Pods: > 1 makes a Deployment.")
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", help="Kubernetes namespace.")
    ] = None,
    health_cmd: Annotated[
        str | None, typer.Option("--health-cmd", help="Command; exit 0 is healthy.")
    ] = None,
    health_http: Annotated[
        str | None, typer.Option("--health-http", help="PORT or PORT/PATH to GET (default path /).")
    ] = None,
    health_tcp: Annotated[
        int | None, typer.Option("--health-tcp", help="PORT to connect to.")
    ] = None,
    health_interval: Annotated[float, typer.Option("--health-interval")] = 30.0,
    health_timeout: Annotated[float, typer.Option("--health-timeout")] = 30.0,
    health_retries: Annotated[int, typer.Option("--health-retries")] = 3,
    health_start_period: Annotated[float, typer.Option("--health-start-period")] = 0.0,
    json_output: Json = False,
) -> None:
    """Deploy a bot, or redeploy it with what changed (``--type container`` moves it)."""
    from codex32 import IsolationType, RestartPolicy
    from codex32.executor import Bot, DeploymentType

    def config_changes() -> dict[str, Any]:
        changes: dict[str, Any] = {"deployment_type": DeploymentType.parse(kind)}
        if isolation is not None:
            changes["isolation"] = IsolationType(isolation.lower())
        if restart is not None:
            changes["restart_policy"] = RestartPolicy.parse(restart)
        for key, value in (
            ("image" if kind.startswith("c") else "kubernetes_image", image),
            ("network", network),
            ("replicas", replicas),
            ("namespace", namespace),
        ):
            if value is not None:
                changes[key] = value
        health = _health(
            health_cmd,
            health_http,
            health_tcp,
            health_interval,
            health_timeout,
            health_retries,
            health_start_period,
        )
        if health is not None:
            changes["health_check"] = health
        return changes

    async def run(executor: AdaptiveExecutor) -> dict[str, Any]:
        bot_name = name or code.stem.replace("_", "-").lower()
        found = await executor.store.get_bot(bot_name)
        base: dict[str, Any] = found[0].model_dump() if found else {"name": bot_name}
        config = dict(base.get("deployment_config") or {})
        config.update(config_changes())
        resources = dict(config.get("resources") or {})
        if memory is not None:
            resources["memory_bytes"] = memory  # "128m": the engine's model reads sizes
        if cpus is not None:
            resources["cpus"] = cpus
        if pids_limit is not None:
            resources["pids_limit"] = pids_limit
        config["resources"] = resources
        spec = {**base, "code": str(code), "deployment_config": config}
        if args is not None or not found:
            spec["args"] = list(args or [])
        for key, values in (("env", env), ("secrets", secret), ("labels", label)):
            if values:
                spec[key] = {**spec.get(key, {}), **_pairs(values, key)}
        bot = Bot.model_validate(spec)
        run = await executor.run_bot(bot)
        return {
            "bot": bot.model_dump(mode="json"),
            "run": run.model_dump(mode="json"),
            "storage": str(executor.storage_dir),
        }

    result = _with_executor(run)
    _ensure_supervisor(Path(result["storage"]))
    if json_output:
        typer.echo(json.dumps({k: v for k, v in result.items() if k != "storage"}, indent=2))
    else:
        typer.echo(result["bot"]["id"])


def _row(status: BotStatus) -> list[str]:
    run = status.run
    state = run.state.value if run else "created"
    if run and run.exit_code is not None and not run.live:
        state += f" ({run.exit_code})"
    if run and run.health.value != "none" and run.live:
        state += f" ({run.health.value})"
    return [
        status.bot.id[:12],
        status.bot.name,
        status.bot.deployment_config.deployment_type.value,
        state,
        run.where if run else "-",
        str(run.number if run else 0),
        ago(run.started_at if run else None),
    ]


def list_bots(
    all_bots: Annotated[bool, typer.Option("--all", "-a", help="Also stopped bots.")] = False,
    json_output: Json = False,
) -> None:
    """List bots (running ones; --all for every bot)."""

    async def run(executor: AdaptiveExecutor) -> list[BotStatus]:
        return await executor.list()

    found = [s for s in _with_executor(run) if all_bots or (s.run and s.run.live)]
    if json_output:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in found], indent=2))
        return
    table(
        [["BOT ID", "NAME", "TYPE", "STATE", "WHERE", "RUNS", "STARTED"], *(_row(s) for s in found)]
    )


def inspect(ref: BotRef, _json_output: Json = True) -> None:
    """The bot's definition, its state and its runs, as JSON."""

    async def run(executor: AdaptiveExecutor) -> dict[str, Any]:
        status = await executor.status(ref)
        runs = await executor.runs(ref)
        out = status.model_dump(mode="json")
        out["runs"] = [r.model_dump(mode="json") for r in runs]
        if status.bot.deployment_config.deployment_type.value == "kubernetes_pod":
            from kubernetes.client import ApiClient

            from codex32.executor.backends.kubernetes import manifests

            out["manifests"] = [
                ApiClient().sanitize_for_serialization(o)  # type: ignore[no-untyped-call]
                for o in manifests(status.bot, secrets={}).objects()
            ]
        return out

    typer.echo(json.dumps(_with_executor(run), indent=2))


def runs(ref: BotRef, json_output: Json = False) -> None:
    """The bot's runs, newest first."""

    async def run(executor: AdaptiveExecutor) -> list[Any]:
        return await executor.runs(ref)

    found = _with_executor(run)
    if json_output:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in found], indent=2))
        return
    rows = [["RUN", "TYPE", "STATE", "EXIT", "HEALTH", "TRIGGER", "WHERE", "STARTED", "RAN"]]
    for r in found:
        ran = f"{(r.finished_at or 0) - r.started_at:.1f}s" if r.finished_at else "-"
        rows.append(
            [
                str(r.number),
                r.deployment_type.value,
                r.state.value,
                "-" if r.exit_code is None else str(r.exit_code),
                r.health.value,
                r.trigger,
                r.where,
                ago(r.started_at),
                ran,
            ]
        )
    table(rows)


def logs(
    ref: BotRef,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Follow new output.")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="Only the last N lines.")] = None,
) -> None:
    """The bot's output."""

    async def run(executor: AdaptiveExecutor) -> None:
        async for line in executor.logs(ref, follow=follow, tail=tail):
            sys.stdout.write(line)
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        _with_executor(run)


def stop(
    refs: Annotated[list[str], typer.Argument(metavar="BOT...", help="Names or ids.")],
    timeout: Annotated[
        float | None, typer.Option("--time", "-t", help="Seconds before SIGKILL.")
    ] = None,
) -> None:
    """Stop bots (SIGTERM, then SIGKILL); they stay stopped."""
    for ref in refs:
        _with_executor(lambda e, r=ref: e.stop_bot(r, timeout))  # type: ignore[misc]
        typer.echo(ref)


def restart(refs: Annotated[list[str], typer.Argument(metavar="BOT...")]) -> None:
    """Stop and start bots again."""
    for ref in refs:
        result = _with_executor(lambda e, r=ref: e.restart_bot(r))  # type: ignore[misc]
        typer.echo(ref)
        _ensure_supervisor(Path(os.environ.get("CODEX32_STORAGE_DIR") or "/var/lib/codex32"))
        del result


def remove(
    refs: Annotated[list[str], typer.Argument(metavar="BOT...")],
    force: Annotated[bool, typer.Option("--force", "-f", help="Stop running bots first.")] = False,
) -> None:
    """Remove bots: their containers or pods, logs and runs."""
    for ref in refs:
        _with_executor(lambda e, r=ref: e.remove_bot(r, force=force))  # type: ignore[misc]
        typer.echo(ref)


def supervise(
    exit_when_idle: Annotated[
        float | None, typer.Option("--exit-when-idle", metavar="SECONDS")
    ] = None,
) -> None:
    """Watch bots in the foreground: health, restarts (what the host service does)."""
    from codex32.executor.supervisor import supervise as run

    guard(lambda: _run_async(run(None, exit_when_idle)))


app.command("deploy")(deploy)
app.command("ls")(list_bots)
app.command("list", hidden=True)(list_bots)
app.command("inspect")(inspect)
app.command("runs")(runs)
app.command("logs")(logs)
app.command("stop")(stop)
app.command("restart")(restart)
app.command("rm")(remove)
app.command("supervise")(supervise)


def _storage() -> Path:
    from codex32.executor.executor import default_storage_dir

    return default_storage_dir()


@db_app.command("init")
def db_init(
    admin_url: Annotated[
        str | None,
        typer.Option(
            "--admin-url",
            help="A PostgreSQL superuser's URL "
            "(postgresql://postgres@HOST:PORT/postgres). Without it: SQLite.",
        ),
    ] = None,
    database: Annotated[
        str, typer.Option("--database", help="The database to create.")
    ] = "codex32",
    user: Annotated[
        str, typer.Option("--user", help="The role to create (its owner).")
    ] = "codex32",
    password: Annotated[
        str | None, typer.Option("--password", help="Default: a random one.")
    ] = None,
) -> None:
    """Create the database, its user and tables; print its URL (setup_database.sh)."""
    from codex32.executor.admin import init_database

    typer.echo(
        guard(lambda: _run_async(init_database(_storage(), admin_url, database, user, password)))
    )


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    url: Annotated[
        str | None, typer.Option("--url", help="Default: $DATABASE_URL, else SQLite.")
    ] = None,
) -> None:
    """Migrate the database to ``revision`` (the newest by default)."""
    from codex32.executor.admin import upgrade_database

    typer.echo(guard(lambda: _run_async(upgrade_database(_storage(), url, revision))))

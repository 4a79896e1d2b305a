"""``/api/v1/bots``: the bot executor over HTTP (deploy, list, get, stop, restart, rm,
logs, health, runs).

The service runs one supervising ``AdaptiveExecutor`` on its storage directory (made
at start-up, closed at shutdown; bots keep running). The operator's policy applies
to bots too: a container bot's config is checked as any container's (the bound code
directory against ``volume_roots``, limits filled in), and a LOCAL_PROCESS bot, which
no namespace isolates, is refused unless the policy's ``min_isolation`` is minimal.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import StreamingResponse

from codex32 import IsolationType
from codex32.executor import AdaptiveExecutor, Bot, DeploymentType
from codex32.service.errors import ApiProblemError
from codex32.service.policy import PolicyDenied
from codex32.service.servers import ServiceContext

router = APIRouter(prefix="/bots", tags=["bots"])


def _executor(request: Request) -> AdaptiveExecutor:
    executor: AdaptiveExecutor = request.app.state.bots
    return executor


def _context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


async def _admitted(request: Request, bot: Bot, existed: bool) -> Bot:
    """The bot as the policy lets it run (403 naming the rule otherwise)."""
    policy = _context(request).policy
    kind = bot.deployment_config.deployment_type
    if kind is DeploymentType.LOCAL_PROCESS and policy.min_isolation is not IsolationType.MINIMAL:
        raise PolicyDenied(
            "min_isolation",
            "a local_process bot runs unisolated on the host",
            hint="deploy it as custom_container",
        )
    if kind is not DeploymentType.CUSTOM_CONTAINER:
        return bot
    from codex32.executor.backends import bot_dir
    from codex32.executor.backends.container import STATE_DIR, ContainerBackend

    executor = _executor(request)
    state = bot_dir(executor.storage_dir, bot) / "state"
    state.mkdir(parents=True, exist_ok=True)  # the config names it as a volume
    try:
        config = ContainerBackend(executor.storage_dir, executor.engine).container_config(bot)
        # The state directory is the executor's own: the caller's volumes are checked.
        own = [v for v in config.volumes if v.target != STATE_DIR]
        checked = policy.check(config.model_copy(update={"volumes": own}))
    except BaseException:
        if not existed:
            shutil.rmtree(state.parent, ignore_errors=True)
        raise
    bot.deployment_config.resources = checked.resources
    return bot


@router.post("", status_code=201)
async def deploy(request: Request, spec: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
    """Deploy a ``Bot`` (JSON, as ``bot inspect`` shows one); a known name redeploys it.

    ``code`` is a path on the service's host, absolute. Answers the bot and its run."""
    code = spec.get("code")
    if not isinstance(code, str) or not code.startswith("/"):
        raise ApiProblemError(
            400,
            "code must be an absolute path on the service's host",
            kind="ConfigError",
            hint="give the bot's .py file or directory as the service sees it",
        )
    executor = _executor(request)
    known = await executor.store.get_bot(str(spec.get("name", "")))
    if known is not None and "id" not in spec:
        spec = {**spec, "id": known[0].id}
    bot = await _admitted(request, Bot.model_validate(spec), existed=known is not None)
    run = await executor.run_bot(bot)
    return {"bot": bot.model_dump(mode="json"), "run": run.model_dump(mode="json")}


@router.get("")
async def list_bots(request: Request, all: bool = False) -> list[dict[str, Any]]:
    """Running bots (``all=true``: every bot), each with its latest run."""
    found = await _executor(request).list()
    return [s.model_dump(mode="json") for s in found if all or (s.run and s.run.live)]


@router.get("/{ref}")
async def get(request: Request, ref: str) -> dict[str, Any]:
    """One bot: its definition, desired state and latest run (404 if unknown)."""
    return (await _executor(request).status(ref)).model_dump(mode="json")


@router.post("/{ref}/stop")
async def stop(request: Request, ref: str, timeout: float | None = None) -> dict[str, Any]:
    """Stop the bot (SIGTERM, SIGKILL after ``timeout``); answers its last run."""
    run = await _executor(request).stop_bot(ref, timeout)
    return {"run": run.model_dump(mode="json") if run else None}


@router.post("/{ref}/restart")
async def restart(request: Request, ref: str, timeout: float | None = None) -> dict[str, Any]:
    """Stop the bot's run and start a new one."""
    return {"run": (await _executor(request).restart_bot(ref, timeout)).model_dump(mode="json")}


@router.delete("/{ref}", status_code=204)
async def remove(request: Request, ref: str, force: bool = False) -> Response:
    """Remove the bot, its runs, logs and container (409 while it runs, unless ``force``)."""
    await _executor(request).remove_bot(ref, force=force)
    return Response(status_code=204)


@router.get("/{ref}/runs")
async def runs(request: Request, ref: str) -> list[dict[str, Any]]:
    """The bot's runs, newest first."""
    return [r.model_dump(mode="json") for r in await _executor(request).runs(ref)]


@router.get("/{ref}/health")
async def health(request: Request, ref: str) -> dict[str, Any]:
    """The latest run's health (``none`` without a health check) and the check itself."""
    status = await _executor(request).status(ref)
    check = status.bot.deployment_config.health_check
    return {
        "bot": status.bot.name,
        "run": status.run.number if status.run else None,
        "state": status.run.state.value if status.run else None,
        "health": status.run.health.value if status.run else "none",
        "health_check": check.model_dump(mode="json") if check else None,
    }


@router.get("/{ref}/logs")
async def logs(
    request: Request, ref: str, follow: bool = False, tail: int | None = None
) -> StreamingResponse:
    """The bot's output as text; ``follow=true`` streams until its run ends."""
    executor = _executor(request)
    await executor.get_bot(ref)  # 404 before the stream starts

    async def body() -> AsyncIterator[bytes]:
        async for line in executor.logs(ref, follow=follow, tail=tail):
            yield line.encode()

    return StreamingResponse(body(), media_type="text/plain; charset=utf-8")

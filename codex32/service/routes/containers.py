"""``/api/v1/containers``: the container verbs, their streams, and interactive exec."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse

from codex32 import AsyncContainer, ContainerConfig, ContainerState
from codex32.service.errors import ApiProblemError, from_exception
from codex32.service.servers import ServiceContext

router = APIRouter(prefix="/containers", tags=["containers"])

_LIVE = ("running", "paused", "restarting")


def _context(request: Request | WebSocket) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


async def get_container(request: Request | WebSocket, ref: str) -> AsyncContainer:
    return await _context(request).engine.containers.get(ref)


async def allowed_container(request: Request | WebSocket, ref: str) -> AsyncContainer:
    """A container the caller may run something in: one made outside the service (by
    root's CLI, say) is held to the policy too before a start, restart or exec."""
    container = await get_container(request, ref)
    _context(request).policy.check(await container.config())
    return container


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    from codex32 import parse_since

    try:
        return parse_since(value, time.time())
    except ValueError as exc:
        raise ApiProblemError(400, f"since={value!r}: {exc}", kind="ValueError") from None


def _tail(value: str) -> int | None:
    if value == "all":
        return None
    if not value.isdigit():
        raise ApiProblemError(
            400, f"tail takes a number or 'all', not {value!r}", kind="ValueError"
        )
    return int(value)


async def summary(container: AsyncContainer) -> dict[str, Any]:
    """A container as listed: its record, and its labels."""
    config = await container.config()
    return {**container.record.to_dict(), "labels": config.labels}


# -- list, create, run -----------------------------------------------------------


@router.get("/_damaged")
async def damaged_records(request: Request) -> list[dict[str, Any]]:
    """Container records that cannot be trusted (``ps -a`` warns of each; ``rm -f``
    removes one). ``_damaged`` can name no container: names start with a letter or digit."""
    found = await _context(request).engine.containers.damaged()
    return [{"message": str(exc), "path": exc.path} for exc in found]


@router.get("")
async def list_containers(
    request: Request,
    all_: Annotated[bool, Query(alias="all", description="stopped ones too")] = False,
    state: Annotated[list[str] | None, Query(description="created, running, exited, ...")] = None,
    name: Annotated[str | None, Query(description="a regular expression on the name")] = None,
    label: Annotated[list[str] | None, Query(description="KEY or KEY=VALUE")] = None,
) -> list[dict[str, Any]]:
    """Containers: running ones, or all (a state filter implies all), as ``docker ps``."""
    states = set(state or [])
    unknown = states - {s.value for s in ContainerState}
    if unknown:
        known = ", ".join(s.value for s in ContainerState)
        raise ApiProblemError(
            400, f"unknown state {sorted(unknown)}", kind="ValueError", hint=f"use one of {known}"
        )
    try:
        pattern = re.compile(name) if name else None
    except re.error as exc:
        raise ApiProblemError(400, f"name={name!r} is not a regular expression: {exc}") from None
    found = await _context(request).engine.containers.list(all=all_ or bool(states))
    rows = []
    for container in found:
        if states and container.status not in states:
            continue
        if pattern is not None and not pattern.search(container.name):
            continue
        row = await summary(container)
        if label and not all(_label_matches(row["labels"], wanted) for wanted in label):
            continue
        rows.append(row)
    return rows


def _label_matches(labels: dict[str, str], wanted: str) -> bool:
    key, has_value, value = wanted.partition("=")
    return key in labels and (not has_value or labels[key] == value)


async def _admitted(request: Request, config: ContainerConfig) -> ContainerConfig:
    return _context(request).policy.check(config)


@router.post("", status_code=201)
async def create(
    request: Request,
    config: ContainerConfig,
    start: Annotated[bool, Query(description="start it too (docker run -d)")] = False,
) -> dict[str, Any]:
    """Create a container from a ``ContainerConfig`` (and start it with ``start=true``).

    The policy is checked first (403 naming the rule); the engine's own validation
    gives the CLI's messages (400)."""
    config = await _admitted(request, config)
    engine = _context(request).engine
    container = await engine.containers.create(config)
    if start:
        try:
            await container.start()
        except BaseException:
            # One call that failed leaves nothing (the start's error is the answer).
            with contextlib.suppress(Exception):
                await container.remove(force=True)
            raise
    return {
        "id": container.id,
        "name": container.name,
        "state": container.status,
        "warnings": container.record.warnings,
    }


@router.post("/run")
async def run(request: Request, config: ContainerConfig) -> dict[str, Any]:
    """Create, start and wait (``docker run`` attached): the exit code and the output."""
    config = await _admitted(request, config)
    result = await _context(request).engine.containers.run(config)
    return {
        "id": result.container_id,
        "exit_code": result.exit_code,
        "stdout": result.output.decode(errors="replace"),
        "stderr": result.error_output.decode(errors="replace"),
    }


@router.post("/plan")
async def plan(request: Request, config: ContainerConfig) -> dict[str, Any]:
    """The set-up plan the config would run (``codex32 plan``): nothing is created."""
    config = await _admitted(request, config)
    engine = _context(request).engine
    described = await engine.call(lambda: engine.sync.plan(config).describe())
    result: dict[str, Any] = json.loads(described)
    return result


@router.post("/prune")
async def prune(request: Request) -> dict[str, Any]:
    """Remove every container that is not running."""
    return {"removed": await _context(request).engine.containers.prune()}


# -- one container ----------------------------------------------------------------


@router.get("/{ref}")
async def inspect(request: Request, ref: str) -> dict[str, Any]:
    """State, config and network settings (``codex32 inspect``)."""
    container = await get_container(request, ref)
    config = await container.config()
    return {
        "Id": container.id,
        "Name": container.name,
        "State": container.record.to_dict(),
        "Config": config.model_dump(mode="json"),
        "NetworkSettings": await container.network_settings(),
    }


@router.post("/{ref}/start", status_code=204)
async def start(request: Request, ref: str) -> Response:
    await (await allowed_container(request, ref)).start()
    return Response(status_code=204)


@router.post("/{ref}/stop", status_code=204)
async def stop(request: Request, ref: str, timeout: float | None = None) -> Response:
    """The stop signal, then SIGKILL after ``timeout`` (default: the container's)."""
    await (await get_container(request, ref)).stop(timeout)
    return Response(status_code=204)


@router.post("/{ref}/kill", status_code=204)
async def kill(request: Request, ref: str, signal: str = "SIGKILL") -> Response:
    await (await get_container(request, ref)).kill(signal)
    return Response(status_code=204)


@router.post("/{ref}/restart", status_code=204)
async def restart(request: Request, ref: str, timeout: float | None = None) -> Response:
    await (await allowed_container(request, ref)).restart(timeout)
    return Response(status_code=204)


@router.post("/{ref}/pause", status_code=204)
async def pause(request: Request, ref: str) -> Response:
    await (await get_container(request, ref)).pause()
    return Response(status_code=204)


@router.post("/{ref}/unpause", status_code=204)
async def unpause(request: Request, ref: str) -> Response:
    await (await get_container(request, ref)).unpause()
    return Response(status_code=204)


@router.post("/{ref}/wait")
async def wait(request: Request, ref: str, timeout: float | None = None) -> dict[str, Any]:
    """Block until the container is not running; its exit code (408 after ``timeout``)."""
    container = await get_container(request, ref)
    code = await container.wait(timeout)
    return {"id": container.id, "exit_code": code}


@router.delete("/{ref}", status_code=204)
async def remove(request: Request, ref: str, force: bool = False) -> Response:
    """Delete the container (``force``: kill it first if it runs)."""
    await (await get_container(request, ref)).remove(force=force)
    return Response(status_code=204)


@router.get("/{ref}/logs")
async def logs(
    request: Request,
    ref: str,
    follow: bool = False,
    tail: str = "all",
    since: str | None = None,
    timestamps: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    format: Annotated[str, Query(pattern="^(text|json)$")] = "text",
) -> StreamingResponse:
    """The output (text; ``format=json``: one ``{time, stream, log}`` per line).

    ``follow=true`` streams until the container stops (or the client leaves)."""
    container = await get_container(request, ref)
    entries = container.stream_logs(
        stdout=stdout, stderr=stderr, tail=_tail(tail), since=_since(since), follow=follow
    )

    async def body() -> AsyncIterator[bytes]:
        async for entry in entries:
            if format == "json":
                line = {"time": entry.time_text, "stream": entry.stream, "log": entry.text}
                yield (json.dumps(line, ensure_ascii=False) + "\n").encode()
            else:
                yield entry.format(timestamps).encode()

    media = "application/x-ndjson" if format == "json" else "text/plain; charset=utf-8"
    return StreamingResponse(body(), media_type=media)


def _stats_json(sample: Any, earlier: Any) -> dict[str, Any]:
    data: dict[str, Any] = dataclasses.asdict(sample)
    data["cpu_percent"] = round(sample.cpu_percent(earlier), 2) if earlier is not None else None
    return data


@router.get("/{ref}/stats", response_model=None)
async def stats(
    request: Request, ref: str, stream: bool = False, interval: float = Query(1.0, gt=0, le=60)
) -> dict[str, Any] | StreamingResponse:
    """One sample (JSON), or with ``stream=true`` one per ``interval`` (NDJSON) while it runs."""
    container = await get_container(request, ref)
    if not stream:
        return _stats_json(await container.stats(), None)

    async def body() -> AsyncIterator[bytes]:
        earlier = None
        try:
            async for sample in container.stream_stats(interval):
                yield (json.dumps(_stats_json(sample, earlier)) + "\n").encode()
                earlier = sample
        except Exception as exc:  # the container went away mid-stream: say so, end
            yield (json.dumps({"error": from_exception(exc).body()}) + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson")


@router.get("/{ref}/top")
async def top(request: Request, ref: str) -> dict[str, Any]:
    """The container's processes (host pids), as ``docker top``."""
    container = await get_container(request, ref)
    return {"processes": await container.top()}


@router.get("/{ref}/export", response_model=None)
async def export(request: Request, ref: str, state: bool = False) -> Any:
    """The filesystem as a tar stream; ``state=true``: the record and config as JSON."""
    container = await get_container(request, ref)
    if state:
        config = await container.config()
        return JSONResponse(
            {"State": container.record.to_dict(), "Config": config.model_dump(mode="json")}
        )
    chunks = await container.export_stream()
    headers = {"Content-Disposition": f'attachment; filename="{container.name}.tar"'}
    return StreamingResponse(chunks, media_type="application/x-tar", headers=headers)

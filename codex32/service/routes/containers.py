"""``/api/v1/containers``: the container verbs, their streams, and interactive exec."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import struct
import termios
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from codex32 import AsyncContainer, ConfigError, ContainerConfig, ContainerState

from ..errors import ApiProblemError, from_exception
from ..servers import ServiceContext

router = APIRouter(prefix="/containers", tags=["containers"])

_LIVE = ("running", "paused", "restarting")


def _context(request: Request | WebSocket) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


async def _get(request: Request | WebSocket, ref: str) -> AsyncContainer:
    return await _context(request).engine.containers.get(ref)


def _since(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    from codex32._logs import parse_since

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
    container = await _get(request, ref)
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
    await (await _get(request, ref)).start()
    return Response(status_code=204)


@router.post("/{ref}/stop", status_code=204)
async def stop(request: Request, ref: str, timeout: float | None = None) -> Response:
    """The stop signal, then SIGKILL after ``timeout`` (default: the container's)."""
    await (await _get(request, ref)).stop(timeout)
    return Response(status_code=204)


@router.post("/{ref}/kill", status_code=204)
async def kill(request: Request, ref: str, signal: str = "SIGKILL") -> Response:
    await (await _get(request, ref)).kill(signal)
    return Response(status_code=204)


@router.post("/{ref}/restart", status_code=204)
async def restart(request: Request, ref: str, timeout: float | None = None) -> Response:
    await (await _get(request, ref)).restart(timeout)
    return Response(status_code=204)


@router.post("/{ref}/pause", status_code=204)
async def pause(request: Request, ref: str) -> Response:
    await (await _get(request, ref)).pause()
    return Response(status_code=204)


@router.post("/{ref}/unpause", status_code=204)
async def unpause(request: Request, ref: str) -> Response:
    await (await _get(request, ref)).unpause()
    return Response(status_code=204)


@router.post("/{ref}/wait")
async def wait(request: Request, ref: str, timeout: float | None = None) -> dict[str, Any]:
    """Block until the container is not running; its exit code (408 after ``timeout``)."""
    container = await _get(request, ref)
    code = await container.wait(timeout)
    return {"id": container.id, "exit_code": code}


@router.delete("/{ref}", status_code=204)
async def remove(request: Request, ref: str, force: bool = False) -> Response:
    """Delete the container (``force``: kill it first if it runs)."""
    await (await _get(request, ref)).remove(force=force)
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
    container = await _get(request, ref)
    entries = container.stream_logs(
        stdout=stdout, stderr=stderr, tail=_tail(tail), since=_since(since), follow=follow
    )
    from codex32._logs import format_entry

    async def body() -> AsyncIterator[bytes]:
        async for entry in entries:
            if format == "json":
                line = {"time": entry.time_text, "stream": entry.stream, "log": entry.text}
                yield (json.dumps(line, ensure_ascii=False) + "\n").encode()
            else:
                yield format_entry(entry, timestamps).encode()

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
    container = await _get(request, ref)
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
    container = await _get(request, ref)
    return {"processes": await container.top()}


@router.get("/{ref}/export", response_model=None)
async def export(request: Request, ref: str, state: bool = False) -> Any:
    """The filesystem as a tar stream; ``state=true``: the record and config as JSON."""
    container = await _get(request, ref)
    if state:
        config = await container.config()
        return JSONResponse(
            {"State": container.record.to_dict(), "Config": config.model_dump(mode="json")}
        )
    chunks = await container.export_stream()
    headers = {"Content-Disposition": f'attachment; filename="{container.name}.tar"'}
    return StreamingResponse(chunks, media_type="application/x-tar", headers=headers)


# -- exec ---------------------------------------------------------------------------


class ExecRequest(BaseModel):
    """A command to run in a running container, its output captured."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    stdin: str | None = Field(default=None, description="text given on the command's stdin")


@router.post("/{ref}/exec")
async def exec_captured(request: Request, ref: str, body: ExecRequest) -> dict[str, Any]:
    """Run a command, wait for it; its exit code and output (``docker exec``)."""
    container = await _get(request, ref)
    stdin_fd = None
    if body.stdin is not None:
        stdin_fd = os.memfd_create("codex32-exec-stdin", os.MFD_CLOEXEC)
        os.write(stdin_fd, body.stdin.encode())
        os.lseek(stdin_fd, 0, os.SEEK_SET)
    try:
        result = await container.exec_run(
            body.command, env=body.env, user=body.user, workdir=body.workdir, stdin=stdin_fd
        )
    finally:
        if stdin_fd is not None:
            os.close(stdin_fd)
    return {
        "exit_code": result.exit_code,
        "stdout": result.output.decode(errors="replace"),
        "stderr": result.error_output.decode(errors="replace"),
    }


def _set_window(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@router.websocket("/{ref}/exec")
async def exec_interactive(
    websocket: WebSocket,
    ref: str,
    cmd: Annotated[list[str] | None, Query()] = None,
    tty: bool = True,
    user: str | None = None,
    workdir: str | None = None,
    env: Annotated[list[str] | None, Query(description="KEY=VALUE")] = None,
    rows: int = 24,
    cols: int = 80,
) -> None:
    """Interactive exec: binary frames in are stdin, binary frames out the output;
    text frames in: ``{"type": "resize", "rows": R, "cols": C}`` or ``{"type": "eof"}``;
    the last frame out: ``{"type": "exit", "exit_code": N}`` (or ``{"type": "error", ...}``)."""
    await websocket.accept()
    try:
        container = await _get(websocket, ref)
        if not cmd:
            raise ConfigError("exec needs a command", hint="pass ?cmd=sh&cmd=-c&cmd=...")
        environment = dict(_env_pair(e) for e in env or [])
        await _relay_exec(websocket, container, cmd, tty, user, workdir, environment, rows, cols)
    except WebSocketDisconnect:
        return
    except Exception as exc:
        error = from_exception(exc)
        websocket.state.__setattr__("codex32_error", error.message)
        with contextlib.suppress(Exception):
            await websocket.send_text(
                json.dumps({"type": "error", "status": error.status, **error.body()})
            )
            await websocket.close(code=1011 if error.status >= 500 else 1008)


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"env {text!r} is not KEY=VALUE")
    return key, value


async def _relay_exec(
    websocket: WebSocket,
    container: AsyncContainer,
    command: list[str],
    tty: bool,
    user: str | None,
    workdir: str | None,
    env: dict[str, str],
    rows: int,
    cols: int,
) -> None:
    loop = asyncio.get_running_loop()
    in_read, in_write = os.pipe2(os.O_CLOEXEC)
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    terminal: list[int] = []  # our own duplicate of the pty master, for resizes

    def got_terminal(master: int) -> None:
        terminal.append(os.dup(master))
        _set_window(master, rows, cols)

    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(out_read, "rb", buffering=0)
    )
    run = asyncio.ensure_future(
        container.exec_run(
            command,
            env=env,
            user=user,
            workdir=workdir,
            stdin=in_read,
            stdout=out_write,
            stderr=out_write,
            tty=tty,
            on_terminal=got_terminal if tty else None,
        )
    )
    stdin_open = [True]

    def close_stdin() -> None:
        if stdin_open[0]:
            stdin_open[0] = False
            os.close(in_write)

    async def pump_output() -> None:
        while chunk := await reader.read(65536):
            await websocket.send_bytes(chunk)

    async def pump_input() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                close_stdin()
                return
            if message.get("bytes") is not None and stdin_open[0]:
                await asyncio.to_thread(_write_all, in_write, message["bytes"])
            elif message.get("text") is not None:
                control = json.loads(message["text"])
                if control.get("type") == "resize" and terminal:
                    _set_window(terminal[0], int(control["rows"]), int(control["cols"]))
                elif control.get("type") == "eof":
                    close_stdin()

    output = asyncio.ensure_future(pump_output())
    inputs = asyncio.ensure_future(pump_input())
    held = [out_write, in_read]  # closed once the exec is over (its relay uses them)
    try:
        result = await run
        os.close(held.pop(0))
        # What the command wrote before it ended; a child it left behind may hold the
        # pipe open: give it a moment, not forever.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(output), timeout=2)
        await websocket.send_text(json.dumps({"type": "exit", "exit_code": result.exit_code}))
        await websocket.close(code=1000)
    finally:
        for task in (output, inputs):
            task.cancel()
        close_stdin()  # a caller gone: the command reads end-of-file (a shell exits)
        transport.close()

        def release(_done: object = None) -> None:
            if run.done() and not run.cancelled():
                run.exception()  # retrieved: reported to the caller already, or moot
            for fd in [*held, *terminal]:
                with contextlib.suppress(OSError):
                    os.close(fd)

        if run.done():
            release()
        else:
            run.add_done_callback(release)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BrokenPipeError:
            return  # the command closed its stdin
        view = view[written:]

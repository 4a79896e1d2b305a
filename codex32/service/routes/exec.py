"""``/api/v1/containers/{ref}/exec``: a command run captured, or interactive over a WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import struct
import termios
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field

from codex32 import AsyncContainer, ConfigError
from codex32.service.errors import from_exception
from codex32.service.routes.containers import allowed_container

router = APIRouter(prefix="/containers", tags=["exec"])


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
    container = await allowed_container(request, ref)
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
        container = await allowed_container(websocket, ref)
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

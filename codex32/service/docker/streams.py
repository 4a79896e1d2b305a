"""Attach and exec: the hijacked streams, and the pipes between them and the engine.

Output goes container -> pipe -> this process -> the client, framed (or raw with a
terminal); stdin goes the other way. A stream ends when the output pipes reach EOF,
which is when every holder of their write ends is gone (the monitor for an attach,
the exec'd command and its children for an exec); for an exec the exit code is
recorded before that, so ``GET /exec/{id}/json`` is final when the client reads EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import struct
import termios
from collections.abc import Awaitable

from aiohttp import web

from codex32 import AsyncContainer, ContainerState

from .backend import AttachPipes, ExecInstance, backend_of, docker_error
from .hijack import Hijack, RawInput
from .wire import (
    STDERR,
    STDOUT,
    DockerAPIError,
    api_version,
    json_response,
    query_bool,
    read_json_body,
)

#: After an exec's command has exited, how long its output may still trickle in
#: (a child it left behind holding the pipe) before the stream is closed anyway.
_DRAIN_AFTER_EXIT = 2.0


async def _pump_pipe(
    fd: int, stream: int, hijack: Hijack, send: bool, activity: list[float] | None = None
) -> None:
    """Copy a pipe to the client until EOF (``send`` False: drain and drop);
    ``activity[0]`` is set to the time of each read."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    try:
        while chunk := await reader.read(65536):
            if activity is not None:
                activity[0] = loop.time()
            if send:
                await hijack.write(stream, chunk)
    finally:
        transport.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


async def _pump_stdin(source: RawInput, fd: int) -> None:
    """Client -> the container's stdin until the client half-closes; then EOF for it."""
    try:
        while data := await source.read():
            await asyncio.to_thread(_write_all, fd, data)
    except OSError:  # the command is gone (EPIPE)
        pass
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def _multiplexed(request: web.Request) -> bool:
    return api_version(request) >= (1, 42)


async def _until_either(first: Awaitable[object], hijack: Hijack) -> bool:
    """Wait for ``first``; False if the client went away before it came."""
    task = asyncio.ensure_future(first)
    while not task.done():
        if hijack.gone:
            task.cancel()
            return False
        await asyncio.wait({task}, timeout=0.2)
    return True


async def attach(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    container = await backend.container(request.match_info["id"])
    config = await container.config()
    want_stdin = query_bool(request, "stdin")
    want_out = query_bool(request, "stdout")
    want_err = query_bool(request, "stderr")
    if not query_bool(request, "stream") and not query_bool(request, "logs"):
        raise DockerAPIError(400, "Bad parameters: you must choose at least one of stream or logs")
    if container.state is ContainerState.CREATED and container.id not in backend.attaches:
        return await _attach_before_start(
            request, container, config.tty, want_stdin, want_out, want_err
        )
    hijack = await Hijack.open(request, tty=config.tty, multiplexed_type=_multiplexed(request))
    if query_bool(request, "stream") and container.state is ContainerState.RUNNING:
        # Attached to a running container: its output from now on (stdin is the monitor's).
        entries = container.stream_logs(stdout=want_out, stderr=want_err, tail=0, follow=True)
        try:
            async for entry in entries:
                if hijack.gone:
                    break
                stream = STDERR if entry.stream == "stderr" else STDOUT
                await hijack.write(stream, entry.text.encode())
        finally:
            await entries.aclose()  # type: ignore[attr-defined]  # stops its thread
    return await hijack.close()


async def _attach_before_start(
    request: web.Request,
    container: AsyncContainer,
    tty: bool,
    want_stdin: bool,
    want_out: bool,
    want_err: bool,
) -> web.StreamResponse:
    """``docker run``: the streams are made now and handed to the container's start."""
    backend = backend_of(request)
    pipes = AttachPipes.make(stdin=want_stdin, tty=tty)
    backend.attaches[container.id] = pipes
    hijack: Hijack | None = None
    pumps: list[asyncio.Task[None]] = []
    try:
        hijack = await Hijack.open(request, tty=tty, multiplexed_type=_multiplexed(request))
        if not await _until_either(pipes.started, hijack):
            return await hijack.close()
        pumps.append(asyncio.ensure_future(_pump_pipe(pipes.out_read, STDOUT, hijack, want_out)))
        pipes.out_read = -1
        if pipes.err_read is not None:
            pumps.append(
                asyncio.ensure_future(_pump_pipe(pipes.err_read, STDERR, hijack, want_err))
            )
            pipes.err_read = None
        if pipes.stdin_write is not None and hijack.stdin is not None:
            backend.background(_pump_stdin(hijack.stdin, pipes.stdin_write))
            pipes.stdin_write = None
        await _until_either(asyncio.gather(*pumps), hijack)
        return await hijack.close()
    finally:
        for task in pumps:
            task.cancel()
        if backend.attaches.get(container.id) is pipes:
            del backend.attaches[container.id]
        pipes.close_container_ends()
        for fd in (pipes.out_read, pipes.err_read, pipes.stdin_write):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


# -- exec --------------------------------------------------------------------------


async def exec_create(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    container = await backend.allowed(await backend.container(request.match_info["id"]))
    body = await read_json_body(request)
    command = body.get("Cmd")
    if isinstance(command, str):
        command = [command]
    if not command or not all(isinstance(arg, str) for arg in command):
        raise DockerAPIError(400, "No exec command specified")
    if body.get("Privileged"):
        raise DockerAPIError(400, "Privileged exec is not supported by Codex-32")
    if container.state is not ContainerState.RUNNING:
        raise DockerAPIError(409, f"Container {container.id} is not running")
    env = {}
    for item in body.get("Env") or []:
        name, sep, value = str(item).partition("=")
        if sep:
            env[name] = value
    size = body.get("ConsoleSize")
    instance = backend.new_exec(
        container=container,
        command=list(command),
        env=env,
        user=body.get("User") or None,
        workdir=body.get("WorkingDir") or None,
        tty=bool(body.get("Tty")),
        attach_stdin=bool(body.get("AttachStdin")),
        attach_stdout=bool(body.get("AttachStdout", True)),
        attach_stderr=bool(body.get("AttachStderr", True)),
        console_size=(int(size[0]), int(size[1])) if size else None,
    )
    return json_response({"Id": instance.id}, status=201)


async def exec_inspect(request: web.Request) -> web.StreamResponse:
    instance = backend_of(request).exec_instance(request.match_info["id"])
    return json_response(instance.inspect())


def _set_size(fd: int | None, size: tuple[int, int] | None) -> None:
    if fd is None or size is None or not all(size):
        return
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


async def exec_resize(request: web.Request) -> web.StreamResponse:
    instance = backend_of(request).exec_instance(request.match_info["id"])
    height = int(request.query.get("h") or 0)
    width = int(request.query.get("w") or 0)
    instance.console_size = (height, width)
    if instance.running:
        _set_size(instance.terminal, instance.console_size)
    return web.Response(status=200)


async def exec_start(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    instance = backend.exec_instance(request.match_info["id"])
    body = await read_json_body(request)
    if instance.started:
        raise DockerAPIError(409, f"Exec command {instance.id} has already run")
    await instance.container.reload()
    if instance.container.state is not ContainerState.RUNNING:
        raise DockerAPIError(409, f"Container {instance.container.id} is not running")
    tty = bool(body.get("Tty", instance.tty))
    size = body.get("ConsoleSize")
    if size:
        instance.console_size = (int(size[0]), int(size[1]))
    instance.started = True
    if body.get("Detach"):
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        instance.running = True
        backend.background(_run_exec(instance, tty, None, null, null, [null]))
        return web.Response(status=200)
    return await _exec_attached(request, instance, tty)


async def _run_exec(
    instance: ExecInstance, tty: bool, stdin: int | None, stdout: int, stderr: int, ours: list[int]
) -> None:
    """Run the command; record its exit code; then close our copies of its pipes."""

    def on_terminal(master: int) -> None:
        instance.terminal = master
        _set_size(master, instance.console_size)

    try:
        result = await instance.container.exec_run(
            instance.command,
            env=instance.env,
            user=instance.user,
            workdir=instance.workdir,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
            on_terminal=on_terminal,
        )
        instance.exit_code = result.exit_code
    except Exception as exc:
        instance.exit_code = getattr(exc, "exit_code", 126)
        if stdout is not None:
            with contextlib.suppress(OSError):
                os.write(stdout, f"{docker_error(exc).message}\r\n".encode())
    finally:
        instance.running = False
        instance.terminal = None
        for fd in ours:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _exec_attached(
    request: web.Request, instance: ExecInstance, tty: bool
) -> web.StreamResponse:
    backend = backend_of(request)
    out_read, out_write = os.pipe()
    err_read, err_write = (None, None) if tty else os.pipe()
    stdin_read, stdin_write = os.pipe() if instance.attach_stdin else (None, None)
    ours = [fd for fd in (out_write, err_write, stdin_read) if fd is not None]
    pumps: list[asyncio.Task[None]] = []
    try:
        hijack = await Hijack.open(request, tty=tty, multiplexed_type=_multiplexed(request))
        # Only now (the client has read the head) may the command write.
        loop = asyncio.get_running_loop()
        activity = [loop.time()]
        pumps.append(
            asyncio.ensure_future(
                _pump_pipe(out_read, STDOUT, hijack, instance.attach_stdout, activity)
            )
        )
        out_read = -1
        if err_read is not None:
            pumps.append(
                asyncio.ensure_future(
                    _pump_pipe(err_read, STDERR, hijack, instance.attach_stderr, activity)
                )
            )
            err_read = None
        if stdin_write is not None and hijack.stdin is not None:
            backend.background(_pump_stdin(hijack.stdin, stdin_write))
            stdin_write = None
        instance.running = True
        run = asyncio.ensure_future(
            _run_exec(
                instance,
                tty,
                stdin_read,
                out_write,
                err_write if err_write is not None else out_write,
                ours,
            )
        )
        ours = []
        await run
        output = asyncio.gather(*pumps)
        while not output.done() and not hijack.gone:
            await asyncio.wait({output}, timeout=0.2)
            if loop.time() - activity[0] > _DRAIN_AFTER_EXIT:
                break  # a child it left behind holds the pipe, silent: end here
        return await hijack.close()
    finally:
        for task in pumps:
            task.cancel()
        for fd in [*ours, out_read, err_read, stdin_write]:
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

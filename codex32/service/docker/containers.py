"""Container endpoints: create, inspect, list, the verbs, wait, logs, stats, top, export."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
import struct
import termios
import time
from typing import Any

from aiohttp import web

from codex32 import AsyncContainer, ContainerNotFoundError, ContainerState

from . import views
from .backend import backend_of, docker_error
from .mapping import to_config
from .wire import (
    MULTIPLEXED,
    RAW_STREAM,
    STDERR,
    STDOUT,
    DockerAPIError,
    JsonLines,
    api_version,
    frame,
    json_response,
    no_content,
    query_bool,
    query_filters,
    query_int,
    read_json_body,
)

_LIVE = (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)
#: How long a log request waits for its first entry before it sends the headers.
_LOG_OPEN_GRACE = 0.5
#: How often a waiting request looks whether its client is still there.
_WAIT_SLICE = 1.0


async def create(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    body = await read_json_body(request)
    name = request.query.get("name") or None
    config = to_config(
        body,
        name,
        default_isolation=backend.default_isolation,
        default_network=backend.default_network,
    )
    try:
        config = backend.policy.check(config)
        container = await backend.engine.containers.create(config)
    except Exception as exc:
        raise docker_error(exc, image=str(body.get("Image"))) from None
    warnings = list(container.record.warnings)
    return json_response({"Id": container.id, "Warnings": warnings}, status=201)


async def inspect(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    return json_response(await _inspect(container))


async def _inspect(container: AsyncContainer) -> dict[str, Any]:
    config = await container.config()
    try:
        settings = await container.network_settings()
    except Exception:  # removed meanwhile, or its endpoint gone: inspect still answers
        settings = {"Mode": config.network or "default"}
    return views.inspect(container, config, settings)


def _matches(
    container: AsyncContainer,
    labels: dict[str, str],
    filters: dict[str, list[str]],
) -> bool:
    record = container.record
    for key, wanted in filters.items():
        if key == "id" and not any(record.id.startswith(w) for w in wanted):
            return False
        if key == "name" and not any(w.lstrip("/") in record.name for w in wanted):
            return False
        if key == "status" and views.inspect_status(record.status) not in wanted:
            return False
        if key == "label":
            for item in wanted:
                label, sep, value = item.partition("=")
                if label not in labels or (sep and labels[label] != value):
                    return False
        if key == "ancestor" and not any(
            w in (record.image, f"{record.image}:latest") for w in wanted
        ):
            return False
        if key == "exited" and str(record.exit_code) not in wanted:
            return False
    return True


_LIST_FILTERS = frozenset({"id", "name", "status", "label", "ancestor", "exited"})


async def list_containers(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    filters = query_filters(request)
    unknown = sorted(set(filters) - _LIST_FILTERS)
    if unknown:
        raise DockerAPIError(400, f"invalid filter '{unknown[0]}'")
    show_all = query_bool(request, "all") or "status" in filters
    limit = query_int(request, "limit")
    rows = []
    for container in reversed(await backend.engine.containers.list(all=show_all)):
        try:
            config = await container.config()
        except ContainerNotFoundError:
            continue
        if _matches(container, dict(config.labels), filters):
            rows.append(views.list_entry(container, config))
    if limit is not None and limit > 0:
        rows = rows[:limit]
    return json_response(rows)


async def start(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    container = await backend.allowed(await backend.container(request.match_info["id"]))
    if container.state is ContainerState.RUNNING:
        return web.Response(status=304)
    pipes = backend.attaches.pop(container.id, None)
    try:
        if pipes is None:
            await container.start()
        else:
            await container.start(
                stdin=pipes.stdin_read, stdout=pipes.out_write, stderr=pipes.err_write
            )
    except Exception as exc:
        raise docker_error(exc) from None
    finally:
        if pipes is not None:
            pipes.close_container_ends()
            if not pipes.started.done():
                pipes.started.set_result(True)
    return no_content()


async def stop(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    if container.state not in _LIVE:
        return web.Response(status=304)
    timeout = query_int(request, "t")
    try:
        await container.stop(timeout)
    except Exception as exc:
        raise docker_error(exc) from None
    return no_content()


async def restart(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    container = await backend.allowed(await backend.container(request.match_info["id"]))
    try:
        await container.restart(query_int(request, "t"))
    except Exception as exc:
        raise docker_error(exc) from None
    return no_content()


async def kill(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    signal_ = request.query.get("signal") or "SIGKILL"
    if container.state is not ContainerState.RUNNING:
        raise DockerAPIError(409, f"Container {container.id} is not running")
    try:
        await container.kill(signal_)
    except ValueError as exc:
        raise DockerAPIError(400, str(exc)) from None
    except Exception as exc:
        raise docker_error(exc) from None
    return no_content()


async def pause(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    try:
        await container.pause()
    except Exception as exc:
        raise docker_error(exc) from None
    return no_content()


async def unpause(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    try:
        await container.unpause()
    except Exception as exc:
        raise docker_error(exc) from None
    return no_content()


async def remove(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    container = await backend.container(request.match_info["id"])
    if query_bool(request, "v"):
        pass  # no anonymous volumes exist to remove
    if query_bool(request, "link"):
        raise DockerAPIError(400, "link removal (v1 links) is not supported by Codex-32")
    force = query_bool(request, "force")
    if container.state in _LIVE and not force:
        raise DockerAPIError(
            409,
            f"You cannot remove a {container.state.value} container {container.id}. "
            "Stop the container before attempting removal or force remove",
        )
    try:
        await container.remove(force=force)
    except ContainerNotFoundError:
        pass  # an --rm container removed by its monitor meanwhile: gone all the same
    except Exception as exc:
        raise docker_error(exc) from None
    backend.forget_execs_of(container.id)
    return no_content()


async def _gone(backend: Any, container_id: str) -> bool:
    try:
        await backend.engine.containers.get(container_id)
    except ContainerNotFoundError:
        return True
    return False


async def wait(request: web.Request) -> web.StreamResponse:
    """Headers now, the body at the exit: ``docker run`` sends this before the start
    and would deadlock if the headers waited for the exit too."""
    backend = backend_of(request)
    condition = request.query.get("condition") or "not-running"
    if condition not in ("not-running", "next-exit", "removed"):
        raise DockerAPIError(
            400, f"invalid condition {condition!r}: use not-running, next-exit or removed"
        )
    container = await backend.container(request.match_info["id"])
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    await response.prepare(request)

    def client_gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    error: str | None = None
    code = container.record.exit_code or 0
    not_started = container.state is ContainerState.CREATED and container.record.exit_code is None
    must_wait = condition != "not-running" or container.state in _LIVE
    if not_started and condition == "not-running":
        must_wait = False
    if must_wait:
        while True:
            if client_gone():
                return response
            try:
                code = await container.wait(timeout=_WAIT_SLICE)
                break
            except TimeoutError:
                continue
            except ContainerNotFoundError:
                break
            except Exception as exc:
                # Docker's wait does not fail while the container lives: a verb's state
                # change in between (a restart under way) is waited out.
                try:
                    await container.reload()
                except ContainerNotFoundError:
                    break
                if container.state in _LIVE:
                    await asyncio.sleep(0.05)
                    continue
                error = str(exc)
                break
    if condition == "removed":
        while not await _gone(backend, container.id):
            if client_gone():
                return response
            await asyncio.sleep(0.05)
    body = {"StatusCode": code, "Error": {"Message": error} if error else None}
    with contextlib.suppress(ConnectionError):
        await response.write(views.json_bytes(body))
        await response.write_eof()
    return response


def _stream_type(request: web.Request, tty: bool) -> str:
    if tty or api_version(request) < (1, 42):
        return RAW_STREAM
    return MULTIPLEXED


def _since(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    if text in ("", "0"):
        return None
    try:
        return float(text)
    except ValueError:
        raise DockerAPIError(400, f"invalid value for {name}: {text!r}") from None


async def logs(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    config = await container.config()
    stdout = query_bool(request, "stdout")
    stderr = query_bool(request, "stderr")
    if not (stdout or stderr):
        raise DockerAPIError(400, "Bad parameters: you must choose at least one stream")
    follow = query_bool(request, "follow")
    timestamps = query_bool(request, "timestamps")
    tail_text = request.query.get("tail", "all")
    tail = None if tail_text in ("", "all") else _int(tail_text, "tail")
    since = _since(request, "since")
    until = _since(request, "until")
    response = web.StreamResponse(
        status=200, headers={"Content-Type": _stream_type(request, config.tty)}
    )
    response.enable_chunked_encoding()
    entries = container.stream_logs(
        stdout=stdout,
        stderr=stderr,
        tail=tail,
        since=since,
        follow=follow and container.state in _LIVE,
    ).__aiter__()
    # The log is opened before the headers go out (as Moby does): docker-py's run()
    # reads this body only after it has waited for and removed the container.
    first: asyncio.Task[Any] = asyncio.ensure_future(entries.__anext__())
    await asyncio.wait({first}, timeout=_LOG_OPEN_GRACE)
    await response.prepare(request)
    try:
        try:
            entry = await first
        except StopAsyncIteration:
            entry = None
        while entry is not None:
            if until is not None and entry.time > until:
                break
            text = entry.text.encode()
            if timestamps:
                text = f"{entry.time_text} ".encode() + text
            stream = STDERR if entry.stream == "stderr" else STDOUT
            await response.write(text if config.tty else frame(stream, text))
            try:
                entry = await entries.__anext__()
            except StopAsyncIteration:
                entry = None
    except ConnectionError:
        return response
    finally:
        # The pending read is cancelled and awaited first: only a generator that is not
        # running can be closed, and closing it stops its reading thread.
        first.cancel()
        with contextlib.suppress(BaseException):
            await first
        with contextlib.suppress(Exception):
            await entries.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DockerAPIError(400, f"invalid value for {name}: {text!r}") from None


async def stats(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    stream = query_bool(request, "stream", default=True)
    one_shot = query_bool(request, "one-shot")
    if not stream:
        previous = None
        if not one_shot and container.state is ContainerState.RUNNING:
            previous = views.stats(container, await _sample(container), None)
            await asyncio.sleep(0.1)
        return json_response(views.stats(container, await _sample(container), previous))
    lines = JsonLines(request)
    await lines.start()
    previous = None
    try:
        while True:
            current = views.stats(container, await _sample(container), previous)
            await lines.send(current)
            previous = current
            await asyncio.sleep(1.0)
            try:
                await container.reload()
            except ContainerNotFoundError:
                break
            if container.state not in _LIVE:
                break
    except ConnectionError:
        return lines.response
    return await lines.finish()


async def _sample(container: AsyncContainer) -> Any:
    try:
        return await container.stats()
    except Exception:  # not running: Moby answers zeros
        return views.zero_stats(time.time())


async def top(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    if container.state is not ContainerState.RUNNING:
        raise DockerAPIError(409, f"Container {container.id} is not running")
    try:
        rows = await container.top()
    except Exception as exc:
        raise docker_error(exc) from None
    titles = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    processes = [
        [
            str(r.get("user", "")),
            str(r.get("pid", "")),
            str(r.get("ppid", "")),
            str(int(float(str(r.get("cpu_percent", 0))))),
            time.strftime("%H:%M", time.localtime(float(str(r.get("started", 0))))),
            "?",
            "00:00:00",
            str(r.get("command", "")),
        ]
        for r in rows
    ]
    return json_response({"Titles": titles, "Processes": processes})


async def export(request: web.Request) -> web.StreamResponse:
    container = await backend_of(request).container(request.match_info["id"])
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/x-tar"})
    try:  # the export is made before the first byte: its failure is still an error reply
        chunks = await container.export_stream()
    except Exception as exc:
        raise docker_error(exc) from None
    response.enable_chunked_encoding()
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except ConnectionError:
        return response
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await response.write_eof()
    return response


async def resize(request: web.Request) -> web.StreamResponse:
    """Size a container's terminal (``docker run -t`` sends its own size at the start and
    on each change). Its monitor holds the master side; PID 1's stdin is the terminal
    itself, and a size set on either side is the pair's (the kernel signals SIGWINCH)."""
    container = await backend_of(request).container(request.match_info["id"])
    height = query_int(request, "h") or 0
    width = query_int(request, "w") or 0
    pid = container.record.pid
    if container.state is ContainerState.RUNNING and pid and height > 0 and width > 0:
        await asyncio.to_thread(_size_terminal_of, pid, height, width)
    return web.Response(status=200)


def _size_terminal_of(pid: int, height: int, width: int) -> None:
    """TIOCSWINSZ on PID 1's stdin when it is a pseudo-terminal (else nothing: no -t).

    The descriptor is the container's: only a pty (by device number) is opened, read
    only and non-blocking, so that no other file it may hold is opened by root."""
    link = f"/proc/{pid}/fd/0"
    try:
        seen = os.stat(link)
        if not _is_pty(seen):
            return
        fd = os.open(link, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if os.fstat(fd).st_rdev == seen.st_rdev:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    except OSError:
        pass
    finally:
        os.close(fd)


def _is_pty(info: os.stat_result) -> bool:
    """A pseudo-terminal's slave side: the UNIX98 pty majors 136-143."""
    return stat.S_ISCHR(info.st_mode) and 136 <= os.major(info.st_rdev) <= 143


async def prune(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    removed = await backend.engine.containers.prune()
    return json_response({"ContainersDeleted": removed, "SpaceReclaimed": 0})

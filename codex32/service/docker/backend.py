"""What every Docker handler shares: the engine's async face, the policy, the defaults,
and the streams waiting for a start (attach) or a run (exec)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from codex32 import (
    AsyncContainer,
    AsyncContainerEngine,
    Codex32Error,
    ConfigError,
    ContainerNotFoundError,
    ImageError,
    ImageNotFoundError,
    IsolationType,
    LaunchError,
    NetworkError,
    StateError,
)

from ..audit import AuditLog
from ..policy import Policy, PolicyDenied
from .wire import DockerAPIError


@dataclass
class AttachPipes:
    """The descriptors an attach hands to the container's start (``docker run``):
    the container's ends go to the monitor, ours stay with the stream."""

    stdin_read: int | None
    stdin_write: int | None
    out_read: int
    out_write: int
    err_read: int | None
    err_write: int | None
    started: asyncio.Future[bool] = field(default_factory=asyncio.Future)

    @classmethod
    def make(cls, *, stdin: bool, tty: bool) -> AttachPipes:
        stdin_read, stdin_write = os.pipe() if stdin else (None, None)
        out_read, out_write = os.pipe()
        err_read, err_write = (None, None) if tty else os.pipe()
        return cls(stdin_read, stdin_write, out_read, out_write, err_read, err_write)

    def close_container_ends(self) -> None:
        """After the start (or its failure): the monitor holds its own copies."""
        for name in ("stdin_read", "out_write", "err_write"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)


@dataclass
class ExecInstance:
    """One ``POST /containers/{id}/exec``: what to run, then how it ran."""

    id: str
    container: AsyncContainer
    command: list[str]
    env: dict[str, str]
    user: str | None
    workdir: str | None
    tty: bool
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    console_size: tuple[int, int] | None = None
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    terminal: int | None = None

    def inspect(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": self.tty,
                "entrypoint": self.command[0] if self.command else "",
                "arguments": self.command[1:],
                "privileged": False,
                "user": self.user or "",
            },
            "OpenStdin": self.attach_stdin,
            "OpenStderr": self.attach_stderr,
            "OpenStdout": self.attach_stdout,
            "CanRemove": not self.running and self.started,
            "ContainerID": self.container.id,
            "DetachKeys": "",
            "Pid": 0,
        }


class DockerBackend:
    """The engine, policy and defaults behind the Docker socket, and its live streams."""

    def __init__(
        self,
        engine: AsyncContainerEngine,
        policy: Policy,
        *,
        audit: AuditLog | None = None,
        default_isolation: IsolationType | None = None,
        default_network: str | None = None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.audit = audit
        self.default_isolation = default_isolation
        self.default_network = default_network
        self.attaches: dict[str, AttachPipes] = {}
        self.execs: dict[str, ExecInstance] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def container(self, name_or_id: str) -> AsyncContainer:
        """A container by name, id or id prefix (Docker's "/name" too); 404 if none."""
        try:
            return await self.engine.containers.get(name_or_id.lstrip("/"))
        except ContainerNotFoundError:
            raise DockerAPIError(404, f"No such container: {name_or_id}") from None

    async def allowed(self, container: AsyncContainer) -> AsyncContainer:
        """A container the caller may run something in: one made outside the service
        (by root's CLI, say) is held to the policy before a start, restart or exec, as
        on the native API."""
        try:
            self.policy.check(await container.config())
        except Exception as exc:
            raise docker_error(exc) from None
        return container

    def new_exec(self, **fields: Any) -> ExecInstance:
        exec_id = secrets.token_hex(32)
        instance = ExecInstance(id=exec_id, **fields)
        self.execs[exec_id] = instance
        return instance

    def exec_instance(self, exec_id: str) -> ExecInstance:
        instance = self.execs.get(exec_id)
        if instance is None:
            raise DockerAPIError(404, f"No such exec instance: {exec_id}")
        return instance

    def forget_execs_of(self, container_id: str) -> None:
        """A removed container's exec instances go with it, as in Moby."""
        for exec_id in [k for k, v in self.execs.items() if v.container.id == container_id]:
            if not self.execs[exec_id].running:
                del self.execs[exec_id]

    def background(self, coroutine: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for pipes in self.attaches.values():
            pipes.close_container_ends()
        self.attaches.clear()


def docker_error(exc: Exception, *, image: str | None = None) -> DockerAPIError:
    """A Codex-32 error as the status and message Moby gives for the same failure."""
    if isinstance(exc, DockerAPIError):
        return exc
    text = str(exc)
    if isinstance(exc, PolicyDenied):
        return DockerAPIError(403, text)
    if isinstance(exc, ContainerNotFoundError):
        message = exc.message if isinstance(exc, Codex32Error) else text
        return DockerAPIError(404, message[:1].upper() + message[1:])
    if isinstance(exc, ImageNotFoundError):
        return DockerAPIError(404, f"No such image: {image}" if image else text)
    if isinstance(exc, ImageError):
        return DockerAPIError(500, text)
    if isinstance(exc, LaunchError):
        # The CLI turns these words into docker run's exit codes 127 and 126.
        if exc.exit_code == 127 and "executable file not found" not in text:
            text += ": executable file not found in $PATH"
        elif exc.exit_code == 126 and "permission denied" not in text:
            text += ": permission denied"
        return DockerAPIError(400 if exc.exit_code in (126, 127) else 500, text)
    if isinstance(exc, StateError):
        return DockerAPIError(409, text)
    if isinstance(exc, NetworkError):
        lowered = text.lower()
        missing = any(w in lowered for w in ("not found", "no such", "does not exist"))
        return DockerAPIError(404 if missing else 400, text)
    if isinstance(exc, ConfigError):
        return DockerAPIError(400, text)
    if isinstance(exc, Codex32Error):
        return DockerAPIError(500, text)
    if isinstance(exc, TimeoutError):
        return DockerAPIError(500, text or "timed out")
    return DockerAPIError(500, f"internal error: {type(exc).__name__}: {text}")


BACKEND = web.AppKey("codex32_docker_backend", DockerBackend)


def backend_of(request: web.Request) -> DockerBackend:
    return request.app[BACKEND]

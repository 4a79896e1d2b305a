"""A Docker-compatible socket for the Docker client tests: the real server, on a unix
socket in a temporary directory, over the session's engine, run on a loop of its own
in a thread (as ``codex32 serve`` runs it in its loop), with the default policy plus
one allowed volume root."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import SESSION_TAG

from codex32 import AsyncContainerEngine, ContainerEngine
from codex32.service.audit import AuditLog
from codex32.service.docker import DockerBackend, DockerServer
from codex32.service.policy import Policy
from codex32.service.sockets import unix_listener


@dataclass
class DockerSocket:
    """Where the tests' Docker API listens, and what it was given."""

    path: Path
    volume_root: Path
    audit: AuditLog
    engine: ContainerEngine

    @property
    def url(self) -> str:
        return f"unix://{self.path}"


class ThreadedDockerServer:
    """The Docker server on its own event loop thread (the tests' clients block)."""

    def __init__(self, engine: ContainerEngine, path: Path, policy: Policy, audit: AuditLog):
        self._engine = engine
        self._path = path
        self._policy = policy
        self._audit = audit
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="docker-api")
        self._server: DockerServer | None = None
        self._async: AsyncContainerEngine | None = None

    async def _start(self) -> None:
        self._async = AsyncContainerEngine(self._engine)
        sock = unix_listener(self._path, mode=0o660, group=None)
        # Containers get no network unless asked: the tests need none, and it is faster.
        backend = DockerBackend(
            self._async, self._policy, audit=self._audit, default_network="none"
        )
        self._server = DockerServer(backend, sock, self._path)
        await self._server.start()

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        # Streams' threads (logs, events) stop within a poll once their reader is gone;
        # they hand items to this loop until then, so it runs a little longer.
        await asyncio.sleep(0.5)
        if self._async is not None:
            await self._async.close()

    def start(self) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            raise

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def docker_socket(engine: ContainerEngine) -> Iterator[DockerSocket]:
    """The Docker API on a fresh socket; at the end no container may be left."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{SESSION_TAG}-docker-"))
    os.chmod(scratch, 0o711)  # a STRICT container's mapped root reaches the volume root
    volume_root = scratch / "volumes"
    volume_root.mkdir(mode=0o755)
    path = scratch / "docker.sock"
    audit = AuditLog(scratch / "audit.jsonl")
    server = ThreadedDockerServer(engine, path, Policy(volume_roots=(str(volume_root),)), audit)
    server.start()
    try:
        yield DockerSocket(path, volume_root, audit, engine)
    finally:
        left = engine.containers.list(all=True)
        for container in left:
            container.remove(force=True)
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    assert not left, f"containers left by the Docker tests: {[c.name for c in left]}"


def wait_until(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@dataclass
class TerminalRun:
    output: bytes
    exit_code: int


def run_in_terminal(
    argv: list[str], env: dict[str, str], typed: list[bytes], timeout: float = 30.0
) -> TerminalRun:
    """Run ``argv`` on a pseudo-terminal, type each of ``typed`` once the output so far
    has settled, and return everything it printed and its exit code."""
    pid, master = pty.fork()
    if pid != 0:  # the terminal's size, which docker -t hands on to the container
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 31, 101, 0, 0))
    if pid == 0:  # the child: exec at once (nothing of pytest's state is touched)
        try:
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    output = bytearray()
    deadline = time.monotonic() + timeout

    def read(until_quiet: float) -> bool:
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:
                    return False
                if not data:
                    return False
                output.extend(data)
                quiet_since = time.monotonic()
            elif output and time.monotonic() - quiet_since > until_quiet:
                return True
        return False

    try:
        for text in typed:
            if not read(0.5):
                break
            os.write(master, text)
        read(float("inf"))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == 0:  # still running at the deadline
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    return TerminalRun(bytes(output), os.waitstatus_to_exitcode(status))


def docker_binaries() -> list[str]:
    """Every distinct docker CLI on this machine: the one on PATH and Debian's."""
    found: list[str] = []
    for candidate in (shutil.which("docker"), "/usr/bin/docker"):
        if candidate and os.access(candidate, os.X_OK):
            real = os.path.realpath(candidate)
            if real not in [os.path.realpath(f) for f in found]:
                found.append(candidate)
    return found


def cli_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()

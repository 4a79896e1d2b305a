"""A real ``codex32 serve`` for the tests: started as a process, reached by real clients.

The service runs as ``python -m codex32.service`` on a unix socket in a temporary
directory (and on 127.0.0.1 with a token when asked), inside the test session's
network namespace and cgroup parent (inherited), on the session's storage directory,
so the session's leak checks cover what it makes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect, unix_connect

BASE = "http://codex32"
API = "/api/v1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Service:
    """One service process; ``client()`` talks to it over its unix socket."""

    def __init__(
        self,
        storage_dir: Path,
        workdir: Path,
        *,
        policy: Path | None = None,
        listen: str | None = None,
        extra_args: list[str] | None = None,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.storage_dir = storage_dir
        self.env = env or {}  # DATABASE_URL, say
        self.workdir = workdir
        self.socket = workdir / "api.sock"
        self.policy = policy
        self.listen = listen
        self.extra_args = extra_args or []
        self.prefix = prefix or []  # a wrapper: systemd-socket-activate, say
        self.log_path = workdir / "service.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        args = [
            *self.prefix,
            sys.executable,
            "-m",
            "codex32.service",
            "--host",
            f"unix://{self.socket}",
            "--storage-dir",
            str(self.storage_dir),
            "--log-level",
            "info",
        ]
        if self.policy is not None:
            args += ["--policy", str(self.policy)]
        if self.listen is not None:
            args += ["--listen", self.listen]
        return args + self.extra_args

    def start(self, timeout: float = 60) -> Service:
        env = dict(os.environ, CODEX32_DOCKER_SOCKET="", **self.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited {self.process.returncode}:\n{self.log()}")
            # A plain connect first: httpx leaks its socket when the connect fails.
            if self._accepts():
                with self.client() as client:
                    if client.get("/health").status_code == 200:
                        return self
            time.sleep(0.1)
        raise RuntimeError(f"the service did not answer within {timeout} s:\n{self.log()}")

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
            return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 60) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(self.socket))
        return httpx.Client(transport=transport, base_url=BASE, timeout=timeout)

    def async_client(self, timeout: float = 120) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url=BASE, timeout=timeout)

    def websocket(self, path: str, **kwargs: Any) -> ClientConnection:
        """A WebSocket to ``path`` over the unix socket."""
        connection: ClientConnection = unix_connect(
            str(self.socket), f"ws://codex32{path}", **kwargs
        )
        return connection

    def tcp_websocket(self, path: str, **kwargs: Any) -> ClientConnection:
        assert self.listen is not None
        connection: ClientConnection = connect(f"ws://{self.listen}{path}", **kwargs)
        return connection

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Send ``sig``; wait for the exit; its return code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def audit(self) -> list[dict[str, Any]]:
        path = self.storage_dir / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def error_of(response: httpx.Response) -> dict[str, Any]:
    """An error answer's body, checked to have the service's shape."""
    body: dict[str, Any] = response.json()
    assert set(body) >= {"message", "kind", "hint"}, body
    assert "Traceback" not in response.text
    return body


def busybox(script: str, **options: Any) -> dict[str, Any]:
    """A config (JSON) running ``sh -c SCRIPT`` in busybox, without a network."""
    return {"image": "busybox", "command": ["sh", "-c", script], "network": "none", **options}


@contextlib.contextmanager
def container(client: httpx.Client, config: dict[str, Any], start: bool = True) -> Iterator[str]:
    """Create (and start) a container through the API; removed (forced) at the end."""
    response = client.post(f"{API}/containers", params={"start": start}, json=config)
    assert response.status_code == 201, response.text
    container_id: str = response.json()["id"]
    try:
        yield container_id
    finally:
        client.delete(f"{API}/containers/{container_id}", params={"force": True})


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)

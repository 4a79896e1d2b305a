"""The host service (``codex32 serve``) the bench starts, and its REST calls.

One ``codex32 serve`` on a unix socket in the bench's directory, on the bench's
storage (so that the bench's removal checks and clean-up cover its containers), in
the bench's network namespace and beneath the bench's cgroup parent (both
inherited), with a policy file of its own (empty: the defaults, whatever
``/etc/codex32/policy.toml`` says) and no Docker-compatible socket. Stopped with
SIGTERM at the end, as dockerd is. The CLI rows reach it with ``--host``; the REST
rows with ``codex32.cli._http`` (the CLI's own client: ``http.client``), as a caller
of the API would with any HTTP client.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from codex32.cli._http import Connection, TransportError

from .host import REPO, stop_daemon

API = "/api/v1"


class HostService:
    """``codex32 serve`` on ``socket``."""

    key = "service"

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "service"
        self.socket = self.dir / "api.sock"
        self.log_path = self.dir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.connection = Connection(unix_path=str(self.socket))

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def argv(self, storage: Path) -> list[str]:
        return [str(REPO / ".venv/bin/codex32"), "serve", "--host", self.url,
                "--storage-dir", str(storage), "--policy", str(self.dir / "policy.toml"),
                "--docker-socket", "", "--log-level", "warning"]  # fmt: skip

    def start(self, storage: Path, env: dict[str, str], timeout: float = 60) -> None:
        self.dir.mkdir(mode=0o700)
        (self.dir / "policy.toml").write_text("# the bench's: the defaults\n")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.argv(storage), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"codex32 serve exited {self.proc.returncode}: {self.log()}")
            with contextlib.suppress(TransportError):
                health = self.connection.request("GET", "/health")
                if health.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"codex32 serve did not answer within {timeout} s")
            time.sleep(0.1)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-600:].strip()
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; its JSON answer (an error answer raises, with its message)."""
        response = self.connection.request(method, API + path, **kwargs)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.read() else None

    def run(self, config: dict[str, Any]) -> dict[str, Any]:
        """``POST /containers/run``: create, start, wait (the API's ``containers.run``)."""
        answer: dict[str, Any] = self.call("POST", "/containers/run", json_body=config)
        return answer

    def run_detached(self, config: dict[str, Any]) -> str:
        """``POST /containers?start=true`` (``docker run -d``): the container's id."""
        created = self.call("POST", "/containers", params={"start": True}, json_body=config)
        return str(created["id"])

    def close(self) -> list[str]:
        if self.proc is None:
            return []
        problems = stop_daemon(self.proc, "codex32 serve")
        if self.socket.exists():
            problems.append(f"codex32 serve left its socket {self.socket}")
        self.proc = None
        return problems

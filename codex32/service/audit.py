"""The audit log: one JSON line per mutating request (who, what, result), beside the events.

``<storage>/audit.jsonl``, 0600, appended with one ``write`` per line (O_APPEND: lines
from concurrent requests, or from the Docker socket's server, never interleave).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from codex32.service.sockets import Peer


class AuditLog:
    """Append-only; ``record`` is cheap (one write) and safe from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(
        self,
        *,
        peer: Peer | None,
        token: str | None,
        method: str,
        path: str,
        status: int,
        action: str | None = None,
        target: str | None = None,
        error: str | None = None,
        api: str = "native",
    ) -> None:
        """``token``: which credential (a fingerprint, never the token itself)."""
        entry: dict[str, Any] = {
            "time": time.time(),
            "api": api,
            "who": (peer.to_json() if peer else {}) | ({"token": token} if token else {}),
            "method": method,
            "path": path,
            "action": action,
            "target": target,
            "status": status,
            "result": "ok" if status < 400 else "error",
        }
        if error:
            entry["error"] = error
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every entry (for tests and ``codex32 serve``'s operators)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

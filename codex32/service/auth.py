"""Who may call, and the audit of what they did: an ASGI middleware around the native app.

* Unix socket: the socket's mode (0660 root:codex32) is the permission; the caller
  is identified by ``SO_PEERCRED`` (uid, gid, pid) and logged.
* TCP: every request, WebSocket handshakes included, needs ``Authorization: Bearer
  TOKEN``; the token is compared in constant time (SHA-256 of both sides); a missing or
  wrong one is a 401 and nothing is done. The token lives 0600 in the storage
  directory (``codex32 serve --init-token`` makes it).
* Every mutating request (POST, PUT, PATCH, DELETE, and interactive exec) is
  appended to the audit log with who, what and the result.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from codex32 import ConfigError
from codex32.service.audit import AuditLog
from codex32.service.sockets import Peer, peer_from_scope

log = logging.getLogger("codex32.service")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Where routes leave an error's message for the audit entry (``request.state``).
ERROR_KEY = "codex32_error"
#: Where the middleware leaves the caller's token fingerprint (``request.state``).
TOKEN_KEY = "codex32_token"


def init_token(path: Path) -> str:
    """Make a new token (replacing any), written 0600 from its birth; return it."""
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return token


def load_token(path: Path) -> str | None:
    """The token in ``path`` (None if there is none); refused if others may read it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    if st.st_mode & 0o077:
        raise ConfigError(
            f"the token file {path} is readable by others (mode {st.st_mode & 0o777:o})",
            hint=f"chmod 600 {path}, or make a new one with codex32 serve --init-token",
        )
    token = path.read_text().strip()
    return token or None


def fingerprint(token: str) -> str:
    """What the audit log shows of a token: enough to tell two apart, no more."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


class AuthMiddleware:
    """Token check on TCP, peer identification on the unix socket, audit of mutations."""

    def __init__(self, app: Any, *, token: str | None, audit: AuditLog | None) -> None:
        self.app = app
        self._token_digest = _digest(token) if token else None
        self._token_fingerprint = fingerprint(token) if token else None
        self.audit = audit

    def _authorized(self, scope: dict[str, Any]) -> bool:
        if self._token_digest is None:
            return False
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer" and given:
                    return hmac.compare_digest(_digest(given.strip()), self._token_digest)
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        peer = peer_from_scope(scope)
        state = scope.setdefault("state", {})
        if peer is None or peer.transport != "unix":
            if not self._authorized(scope):
                await _deny(scope, send)
                self._record(scope, peer, None, 401, "missing or wrong bearer token")
                return
            state[TOKEN_KEY] = self._token_fingerprint
        mutating = scope.get("method") in MUTATING or (
            scope["type"] == "websocket" and scope["path"].endswith("/exec")
        )
        if not mutating:
            await self.app(scope, receive, send)
            return
        status = [500]
        recorded = [False]

        def record() -> None:
            if not recorded[0]:
                recorded[0] = True
                self._record(scope, peer, state.get(TOKEN_KEY), status[0], state.get(ERROR_KEY))

        async def send_and_watch(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                status[0] = int(message["status"])
                record()  # before the answer leaves: a caller that saw it finds the entry
            elif kind == "websocket.accept":
                status[0] = 101
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            record()

    def _record(
        self,
        scope: dict[str, Any],
        peer: Peer | None,
        token: str | None,
        status: int,
        error: str | None,
    ) -> None:
        if self.audit is None:
            return
        path = scope.get("path", "")
        action, target = _what(scope.get("method", "WS"), path)
        try:
            self.audit.record(
                peer=peer,
                token=token,
                method=scope.get("method", "WEBSOCKET"),
                path=path,
                status=status,
                action=action,
                target=target,
                error=error,
            )
        except OSError:
            log.exception("cannot write the audit log %s", self.audit.path)
        who = peer.describe() if peer else "unknown peer"
        log.info("%s %s %s -> %s (%s)", scope.get("method", "WEBSOCKET"), path, action, status, who)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _what(method: str, path: str) -> tuple[str, str | None]:
    """``("container.stop", "web")`` from ``POST /api/v1/containers/web/stop``."""
    parts = [p for p in path.split("/") if p][2:]  # after api/v1
    if not parts:
        return method.lower(), None
    kind = parts[0].rstrip("s")
    if len(parts) == 1:
        return f"{kind}.{'create' if method == 'POST' else method.lower()}", None
    verb = parts[2] if len(parts) > 2 else {"DELETE": "remove"}.get(method, method.lower())
    return f"{kind}.{verb}", parts[1]


async def _deny(scope: dict[str, Any], send: Any) -> None:
    body = json.dumps(
        {
            "message": "authentication required: missing or wrong bearer token",
            "kind": "Unauthorized",
            "hint": "send Authorization: Bearer TOKEN (the token codex32 serve --init-token made)",
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"www-authenticate", b"Bearer"),
        (b"content-length", str(len(body)).encode()),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return
    await send({"type": "websocket.close", "code": 1008})

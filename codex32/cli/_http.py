"""HTTP/1.1 to the host service with the standard library (unix socket or TCP).

The CLI's client path through ``--host`` uses this rather than httpx: importing httpx
imports its own command line too (click, rich, pygments) and anyio, ~45 ms at every
CLI call, more than the request itself costs. ``http.client`` speaks HTTP/1.1
(chunked answers included); this module adds the unix socket, the query encoding and
the few answer helpers the client uses. One connection per request: a followed
stream (logs) stays open while other requests (a kill on Ctrl-C) are made.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

_FAILURES = (OSError, http.client.HTTPException)


class TransportError(Exception):
    """The service could not be reached, or the connection broke (its cause: the
    ``OSError`` or ``http.client`` error). Raised for the connection only, never for
    what the caller does with the body (writing it to a file, say)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("codex32")
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Response:
    """An answer: its status, and its body read whole or as it comes."""

    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self._raw = raw
        self.status_code = raw.status
        self._body: bytes | None = None

    def read(self) -> bytes:
        if self._body is None:
            try:
                self._body = self._raw.read()
            except _FAILURES as exc:
                raise TransportError(exc) from exc
        return self._body

    @property
    def text(self) -> str:
        return self.read().decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.read())

    def iter_lines(self) -> Iterator[str]:
        """Each line as soon as it arrived, without its line ending."""
        while line := self._read(self._raw.readline):
            yield line.decode(errors="replace").rstrip("\r\n")

    def iter_bytes(self, size: int = 1 << 16) -> Iterator[bytes]:
        while chunk := self._read(lambda: self._raw.read1(size)):
            yield chunk

    @staticmethod
    def _read(read: Callable[[], bytes]) -> bytes:
        try:
            return read()
        except _FAILURES as exc:
            raise TransportError(exc) from exc


def query(params: Mapping[str, Any] | None) -> str:
    """``?a=1&f=x&f=y``: lists repeat their key, booleans are ``true``/``false``."""
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if isinstance(item, bool):
                pairs.append((key, "true" if item else "false"))
            elif item is not None:
                pairs.append((key, str(item)))
    return "?" + urlencode(pairs, quote_via=quote) if pairs else ""


class Connection:
    """Where the service listens: ``unix_path``, or ``host:port`` with ``tls``."""

    def __init__(
        self,
        *,
        unix_path: str | None = None,
        address: str | None = None,
        tls: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.unix_path = unix_path
        self.address = address
        self.tls = tls
        self.headers = dict(headers or {})

    def _open(self) -> http.client.HTTPConnection:
        if self.unix_path is not None:
            return _UnixConnection(self.unix_path)
        assert self.address is not None
        if self.tls:
            import ssl

            return http.client.HTTPSConnection(self.address, context=ssl.create_default_context())
        return http.client.HTTPConnection(self.address)

    @contextlib.contextmanager
    def open(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Iterator[Response]:
        """Send one request; the answer, whose body is read within the ``with``."""
        headers = {**self.headers, "Accept": "*/*"}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        connection = self._open()
        try:
            try:
                connection.request(method, path + query(params), body=body, headers=headers)
                raw = connection.getresponse()
            except _FAILURES as exc:
                raise TransportError(exc) from exc
            yield Response(raw)
        finally:
            connection.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        """One request, its answer read whole."""
        with self.open(method, path, **kwargs) as response:
            response.read()
            return response

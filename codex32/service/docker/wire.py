"""Docker Engine API wire facts: versions, Moby's booleans, errors, streams, frames.

Everything here is what the real clients (docker-py 7.x, the docker CLI) were measured
to need; see docs/docker-compat.md. No engine calls: handlers use these helpers.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

#: The API version advertised (``/_ping`` Api-Version, ``/version`` ApiVersion). 1.41 is
#: the floor the CLI needs to leave ``--rm`` and waiting to the server; from 1.42 a
#: stream without a terminal is typed ``multiplexed-stream``.
API_VERSION = "1.43"
#: The oldest version accepted in a ``/vX.Y/`` path (docker-py refuses below 1.24).
MIN_API_VERSION = "1.24"
#: Engine version reported to clients (what ``docker version`` shows as Server).
ENGINE_VERSION = "24.0.0-codex32"

MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW_STREAM = "application/vnd.docker.raw-stream"

STDOUT = 1
STDERR = 2

_FALSE = frozenset({"", "0", "no", "false", "none"})
_VERSION = re.compile(r"^v?(\d+)\.(\d+)$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DockerAPIError(Exception):
    """An answer Docker gives as ``{"message": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def version_tuple(text: str) -> tuple[int, int]:
    """``"1.41"`` (or ``"v1.41"``) as ``(1, 41)``; a 400 for anything else."""
    match = _VERSION.match(text)
    if match is None:
        raise DockerAPIError(400, f"invalid API version {text!r}")
    return int(match.group(1)), int(match.group(2))


def check_version(text: str) -> tuple[int, int]:
    """The version a ``/vX.Y/`` path asks for, refused when newer than served or too old."""
    asked = version_tuple(text)
    if asked > version_tuple(API_VERSION):
        raise DockerAPIError(
            400,
            f"client version {text.lstrip('v')} is too new. "
            f"Maximum supported API version is {API_VERSION}",
        )
    if asked < version_tuple(MIN_API_VERSION):
        raise DockerAPIError(
            400,
            f"client version {text.lstrip('v')} is too old. "
            f"Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version",
        )
    return asked


def api_version(request: web.Request) -> tuple[int, int]:
    """The version the request was made for (the path's, or the newest served)."""
    asked = request.match_info.get("version")
    return version_tuple(asked) if asked else version_tuple(API_VERSION)


def moby_bool(value: str | None, default: bool = False) -> bool:
    """A query boolean as Moby's ``BoolValue``: "", 0, no, false, none are false."""
    if value is None:
        return default
    return value.strip().lower() not in _FALSE


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """The named query parameter as a Moby boolean."""
    return moby_bool(request.query.get(name), default)


def query_int(request: web.Request, name: str) -> int | None:
    """An integer query parameter; absent or empty is None, anything else a 400."""
    text = request.query.get(name, "")
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise DockerAPIError(400, f"invalid value for {name}: {text!r}") from None


def query_filters(request: web.Request) -> dict[str, list[str]]:
    """Docker's ``filters`` query: JSON ``{"key": ["v", ...]}`` or the old
    ``{"key": {"v": true}}`` form, both as ``{"key": ["v", ...]}``."""
    text = request.query.get("filters", "")
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        raise DockerAPIError(400, f"invalid filters: {text!r} is not JSON") from None
    if not isinstance(raw, dict):
        raise DockerAPIError(400, "invalid filters: expected a JSON object")
    filters: dict[str, list[str]] = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            filters[str(key)] = [str(v) for v, on in value.items() if on]
        elif isinstance(value, list):
            filters[str(key)] = [str(v) for v in value]
        else:
            filters[str(key)] = [str(value)]
    return filters


def json_response(body: Any, status: int = 200) -> web.Response:
    """JSON typed exactly ``application/json``: the CLI decodes an error body only then
    (with aiohttp's ``; charset=utf-8`` it prints the raw JSON)."""
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type="application/json"
    )


def error_response(status: int, message: str) -> web.Response:
    """Docker's error body: one message, JSON."""
    return json_response({"message": message}, status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


def frame(stream: int, data: bytes) -> bytes:
    """One multiplexed frame: ``>BxxxL`` header (stream, length), then the bytes."""
    return struct.pack(">BxxxL", stream, len(data)) + data


async def read_json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body; empty is ``{}``, anything else a 400."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DockerAPIError(400, f"invalid JSON body: {exc}") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise DockerAPIError(400, "invalid JSON body: expected an object")
    return body


class JsonLines:
    """A chunked response with one JSON object a line (events, streamed stats, pulls):
    docker-py decodes a body that is not chunked as one JSON document."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json"}
        )
        self._response.enable_chunked_encoding()

    async def start(self) -> None:
        """Send the headers now (``docker events`` waits for them)."""
        await self._response.prepare(self._request)

    async def send(self, item: Any) -> None:
        await self._response.write(json.dumps(item).encode() + b"\n")

    async def finish(self) -> web.StreamResponse:
        await self._response.write_eof()
        return self._response

    @property
    def response(self) -> web.StreamResponse:
        return self._response

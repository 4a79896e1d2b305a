"""``/api/v1/events``: the engine's events, as NDJSON over HTTP or over a WebSocket.

Both follow the engine's events file, so events of containers made by the CLI or any
other process come too, not only those of this service's own calls.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse

from codex32.service.errors import ApiProblemError, from_exception
from codex32.service.servers import ServiceContext

router = APIRouter(tags=["events"])

Filters = Annotated[
    list[str] | None, Query(alias="filter", description="KEY=VALUE: container, event, type, ...")
]


def _times(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    from codex32 import parse_since

    now = time.time()
    try:
        return (
            parse_since(since, now) if since else None,
            parse_since(until, now) if until else None,
        )
    except ValueError as exc:
        raise ApiProblemError(400, str(exc), kind="ValueError") from None


def _filters(values: list[str] | None) -> dict[str, list[str]]:
    from codex32 import parse_event_filters

    try:
        return parse_event_filters(values or [])
    except ValueError as exc:
        raise ApiProblemError(400, str(exc), kind="ValueError") from None


@router.get("/events")
async def events(
    request: Request,
    since: str | None = None,
    until: str | None = None,
    follow: bool | None = None,
    filter_: Filters = None,
) -> StreamingResponse:
    """One JSON event per line. Streams new ones (as ``docker events``) unless ``until``
    is given or ``follow=false``; ``since``: past ones from then on first."""
    start, end = _times(since, until)
    filters = _filters(filter_)
    engine: ServiceContext = request.app.state.context
    following = follow if follow is not None else end is None

    async def body() -> AsyncIterator[bytes]:
        if not following:
            for event in await engine.engine.event_list(since=start, until=end, filters=filters):
                yield (event.to_json() + "\n").encode()
            return
        async for event in engine.engine.events(since=start, filters=filters):
            if end is not None and event.time > end:
                return
            yield (event.to_json() + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson")


@router.websocket("/events")
async def events_socket(
    websocket: WebSocket,
    since: str | None = None,
    filter_: Filters = None,
) -> None:
    """One JSON event per text frame, as they happen (``since``: past ones first)."""
    await websocket.accept()
    context: ServiceContext = websocket.app.state.context
    try:
        start, _ = _times(since, None)
        filters = _filters(filter_)
    except ApiProblemError as exc:
        await websocket.send_text(json.dumps({"type": "error", **exc.error.body()}))
        await websocket.close(code=1008)
        return

    async def until_disconnect() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await websocket.receive_text()

    import asyncio

    watcher = asyncio.ensure_future(until_disconnect())
    stream = context.engine.events(since=start, filters=filters)
    try:
        next_event = asyncio.ensure_future(anext(stream))
        while True:
            done, _ = await asyncio.wait({next_event, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                next_event.cancel()
                return
            await websocket.send_text(next_event.result().to_json())
            next_event = asyncio.ensure_future(anext(stream))
    except (WebSocketDisconnect, StopAsyncIteration):
        return
    except Exception as exc:
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "error", **from_exception(exc).body()}))
            await websocket.close(code=1011)
    finally:
        watcher.cancel()
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]

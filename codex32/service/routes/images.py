"""``/api/v1/images`` (and ``/api/v1/templates``, the same): rootfs templates."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from codex32 import ContainerImage
from codex32.service.errors import from_exception
from codex32.service.servers import ServiceContext

router = APIRouter(tags=["images"])


def _context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


async def list_images(request: Request) -> list[dict[str, Any]]:
    """Every template, built or not."""
    return [i.model_dump() for i in await _context(request).engine.images.list()]


async def inspect_image(request: Request, name: str) -> dict[str, Any]:
    """One template (404 if there is no such recipe)."""
    return (await _context(request).engine.images.get(name)).model_dump()


async def build_image(request: Request, name: str) -> StreamingResponse:
    """(Re)build a template; its progress streamed as NDJSON: ``{"stream": line}``,
    then ``{"status": "built", "image": {...}}`` or ``{"error": {...}}``."""
    images = _context(request).engine.images
    await images.get(name)  # an unknown name is a 404 before anything streams

    async def body() -> AsyncIterator[bytes]:
        try:
            async for item in images.build_stream(name):
                if isinstance(item, ContainerImage):
                    line: dict[str, Any] = {"status": "built", "image": item.model_dump()}
                else:
                    line = {"stream": item}
                yield (json.dumps(line) + "\n").encode()
        except Exception as exc:
            yield (json.dumps({"error": from_exception(exc).body()}) + "\n").encode()

    return StreamingResponse(body(), media_type="application/x-ndjson")


for _prefix in ("/images", "/templates"):
    router.add_api_route(_prefix, list_images, methods=["GET"])
    router.add_api_route(_prefix + "/{name}", inspect_image, methods=["GET"])
    router.add_api_route(_prefix + "/{name}/build", build_image, methods=["POST"])

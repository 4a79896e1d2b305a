"""``/api/v1/networks``: named bridge networks."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict

from codex32.service.servers import ServiceContext

router = APIRouter(prefix="/networks", tags=["networks"])


def _context(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


class NetworkCreate(BaseModel):
    """``codex32 network create``'s arguments."""

    model_config = ConfigDict(extra="forbid")

    name: str
    subnet: str
    gateway: str | None = None
    masquerade: bool = False


@router.get("")
async def list_networks(request: Request) -> list[dict[str, Any]]:
    """Every network, the default one first."""
    return [n.to_json() for n in await _context(request).engine.networks.list()]


@router.post("", status_code=201)
async def create_network(request: Request, body: NetworkCreate) -> dict[str, Any]:
    """Create a network and its bridge (409 if the name or subnet is taken)."""
    created = await _context(request).engine.networks.create(
        body.name, body.subnet, gateway=body.gateway, masquerade=body.masquerade
    )
    return created.to_json()


@router.get("/{name}")
async def inspect_network(request: Request, name: str) -> dict[str, Any]:
    """Definition, bridge state and containers."""
    return await _context(request).engine.networks.inspect(name)


@router.delete("/{name}", status_code=204)
async def remove_network(request: Request, name: str) -> Response:
    """Remove a network (409 while containers use it)."""
    await _context(request).engine.networks.remove(name)
    return Response(status_code=204)

"""What the engine shows of an image: a model, no OS calls.

Kept apart from the container's config: it describes what exists, not what a user asks.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ContainerImage(BaseModel):
    """A rootfs template as the engine shows it (``codex32 images``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    built: bool
    path: str
    recipe: str
    command: list[str]

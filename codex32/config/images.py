"""What the engine shows of an image: a model, no OS calls.

Kept apart from the container's config: it describes what exists, not what a user asks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ContainerImage(BaseModel):
    """A rootfs template or a stored OCI image as the engine shows it (``codex32 images``).

    ``kind`` tells which; the id, names, digests, size and creation time are an image's.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    built: bool
    path: str
    recipe: str
    command: list[str]
    kind: Literal["template", "image"] = "template"
    id: str = ""
    tags: list[str] = Field(default_factory=list)
    digests: list[str] = Field(default_factory=list)
    size: int = 0
    created: str = ""

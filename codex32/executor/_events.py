"""What the executor reads of the engine's events (``engine.on`` hands them over).

A structural type: the engine's event objects have these fields; ``Event`` is the one
the executor makes itself when it sees a container's start before its event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class EngineEvent(Protocol):
    time: float
    type: str
    action: str
    id: str
    name: str
    attributes: dict[str, str]


@dataclass
class Event:
    time: float
    type: str
    action: str
    id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)

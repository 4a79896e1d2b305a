"""What the executor reads of the engine's events (``engine.on`` hands them over).

A structural type: the engine's own event objects have these fields, and the
executor makes one itself when it sees a container's start before its event.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Event:
    time: float
    type: str
    action: str
    id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)

"""``python -m codex32._netrelease STORAGE ID``: a monitor's way to release a network endpoint.

The monitor removes an ``--rm`` container itself, after its exit; but it runs without
site-packages and must stay small, while giving back the address lease, the peers'
``hosts`` entries and any leftover link is engine work (the links need pyroute2). So,
as for restarts (``_restart``), it runs this short-lived engine process first, and
only for containers that were on a bridge network (those with ``network.json``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ._networking import Networking
from ._state import StateStore
from .errors import Codex32Error


def main() -> int:
    storage, container_id = Path(sys.argv[1]), sys.argv[2]
    try:
        Networking(storage, StateStore(storage)).release(container_id)
    except (Codex32Error, OSError) as exc:
        print(f"codex32: network release of {container_id[:12]} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m codex32._netrelease STORAGE ID``: kept for monitors of an older version.

Monitors now release their container's network endpoint in their own process
(``_network/endpoint.py``); monitors started before an upgrade still run this module
when their ``--rm`` container exits, so it stays, doing the same release.
"""

from __future__ import annotations

import sys
from pathlib import Path

from codex32._network.endpoint import EndpointFiles
from codex32._store.state import StateStore
from codex32.errors import Codex32Error


def main() -> int:
    storage, container_id = Path(sys.argv[1]), sys.argv[2]
    try:
        EndpointFiles(storage, StateStore(storage)).release(container_id)
    except (Codex32Error, OSError) as exc:
        print(f"codex32: network release of {container_id[:12]} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

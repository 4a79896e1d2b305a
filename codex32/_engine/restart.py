"""``python -m codex32._engine.restart STORAGE ID``: a monitor's way to restart its container.

The monitor of an exited container cannot wire cgroups and networks itself (that
is the engine's work), so after its back-off it runs this short-lived engine
process, which starts the container again under a fresh monitor.
"""

from __future__ import annotations

import contextlib
import sys

from codex32._engine.engine import ContainerEngine
from codex32._store.state import ContainerRecord
from codex32.errors import Codex32Error


def main() -> int:
    storage, container_id = sys.argv[1], sys.argv[2]
    engine = ContainerEngine(storage, fork_server=False)
    try:
        engine.containers.get(container_id).start(restarting=True)
    except Codex32Error as exc:
        print(f"codex32: restart of {container_id[:12]} failed: {exc}", file=sys.stderr)

        reason = f"restart failed: {exc}"

        def failed(record: ContainerRecord) -> None:
            record.error = reason

        with contextlib.suppress(Codex32Error, OSError):
            engine._store.update(container_id, failed)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

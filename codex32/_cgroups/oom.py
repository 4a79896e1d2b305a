"""Read a cgroup's OOM-kill counter from its directory (standard library only).

The monitor, which must stay small and never imports the drivers, uses this to
tell whether the kernel's OOM killer struck while the container ran.
"""

from __future__ import annotations

import os


def oom_kill_count(paths: dict[str, str]) -> int:
    """``oom_kill`` from v2 ``memory.events`` or v1 ``memory.oom_control`` (0 if absent)."""
    candidates = []
    if "unified" in paths:
        candidates.append(os.path.join(paths["unified"], "memory.events"))
    if "memory" in paths:
        candidates.append(os.path.join(paths["memory"], "memory.oom_control"))
    for path in candidates:
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0

"""What the kernel charges for moving a process into a cgroup, without any runtime.

A ``sleep`` is moved back and forth between two cgroups (beneath the bench's own)
in each v1 hierarchy the engine uses, by one ``write`` of its pid to
``cgroup.procs`` per hierarchy, as every runtime does once per container. Rounds run
back to back or after 50 ms of idle: on this kernel a migration after idle waits
for an RCU grace period (``cgroup_threadgroup_rwsem``), which is the same price for
Codex-32, crun and runc.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
from typing import Any

from . import host

#: The hierarchies Codex-32's v1 driver puts a container in.
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "blkio", "devices")
IDLE = 0.05


def _copy_cpuset(parent: str, child: str) -> None:
    for name in ("cpuset.cpus", "cpuset.mems"):
        with open(os.path.join(parent, name)) as f:
            value = f.read().strip()
        with open(os.path.join(child, name), "w") as f:
            f.write(value)


def measure(name: str, rounds: int) -> dict[str, Any]:
    """Per-write and per-round (all hierarchies) times, back to back and after idle (ms).

    ``name`` is the cgroup made beneath the bench's own in each hierarchy (removed by
    the caller's clean-up as well as here).
    """
    hierarchies = [
        h
        for h in host.own_hierarchies()
        if h.controllers and set(h.controllers.split(",")) & set(CONTROLLERS)
    ]
    pairs: list[tuple[str, str]] = []
    child = subprocess.Popen(["sleep", "600"])
    try:
        for h in hierarchies:
            top = h.directory(name)
            os.makedirs(top, exist_ok=True)
            if "cpuset" in h.controllers.split(","):
                _copy_cpuset(os.path.dirname(top), top)
            dirs = []
            for leaf in ("a", "b"):
                path = os.path.join(top, leaf)
                os.makedirs(path, exist_ok=True)
                if "cpuset" in h.controllers.split(","):
                    _copy_cpuset(top, path)
                dirs.append(os.path.join(path, "cgroup.procs"))
            pairs.append((dirs[0], dirs[1]))
        pid = str(child.pid).encode()
        out: dict[str, Any] = {"hierarchies": len(pairs)}
        for mode, idle in (("warm", 0.0), ("idle", IDLE)):
            writes: list[float] = []
            totals: list[float] = []
            for i in range(rounds + 1):
                if idle:
                    time.sleep(idle)
                begin = time.monotonic_ns()
                each = []
                for pair in pairs:
                    fd = os.open(pair[i % 2], os.O_WRONLY)
                    try:
                        t = time.monotonic_ns()
                        os.write(fd, pid)
                        each.append((time.monotonic_ns() - t) / 1e6)
                    finally:
                        os.close(fd)
                if i == 0:
                    continue  # the first round follows the set-up, not the mode
                totals.append((time.monotonic_ns() - begin) / 1e6)
                writes += each
            out[mode] = {
                "round_median": statistics.median(totals),
                "first_write_median": statistics.median(writes[:: len(pairs)]),
                "write_median": statistics.median(writes),
                "write_max": max(writes),
            }
        return out
    finally:
        child.kill()
        child.wait()
        for h in hierarchies:
            top = h.directory(name)
            for leaf in ("a", "b"):
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(top, leaf))
            with contextlib.suppress(OSError):
                os.rmdir(top)

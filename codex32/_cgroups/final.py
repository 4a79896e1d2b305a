"""A container's last figures and the removal of its cgroup at exit (standard library only).

Docker and runc remove a container's cgroup when it exits. The monitor does the same,
once it has written down what the cgroup still knows: peak memory and CPU time (the
OOM kills come from ``oom.py``). Like ``oom.py`` it reads files by their paths, so the
small monitor never imports the drivers.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class FinalFigures:
    """What a container's cgroup shows once its last process is gone."""

    memory_peak_bytes: int | None
    cpu_usage_ns: int | None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return None


def _number(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    with contextlib.suppress(ValueError):
        return int(text.strip())
    return None


def final_figures(paths: dict[str, str]) -> FinalFigures:
    """Peak memory and CPU time from v2 (``unified``) or v1 (per controller) paths."""
    if "unified" in paths:
        base = paths["unified"]
        usage = None
        for line in (_read(os.path.join(base, "cpu.stat")) or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                usage = int(value) * 1000
        return FinalFigures(_number(os.path.join(base, "memory.peak")), usage)
    peak = cpu = None
    if "memory" in paths:
        peak = _number(os.path.join(paths["memory"], "memory.max_usage_in_bytes"))
    if "cpuacct" in paths:
        cpu = _number(os.path.join(paths["cpuacct"], "cpuacct.usage"))
    return FinalFigures(peak, cpu)


def remove_cgroup(paths: dict[str, str], timeout: float = 2.0) -> list[str]:
    """rmdir each directory (sub-cgroups first), retrying while the kernel keeps it busy.

    A cgroup stays busy for a moment after its last task is reaped. Returns the
    directories still there (the engine's ``rm`` and ``reconcile`` try again).
    """
    left = []
    for path in sorted(set(paths.values())):
        if not _remove_tree(path, time.monotonic() + timeout):
            left.append(path)
    return left


def _remove_tree(path: str, deadline: float) -> bool:
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(entry.path, deadline)
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)

"""Figures for the load suite: time, memory, counts, appended where ``make stress``
prints them (``CODEX32_FIGURES``), and shown in the test's own output."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def mem_used_mib() -> float:
    """The host's memory in use (MemTotal - MemAvailable), MiB."""
    fields: dict[str, int] = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields[key] = int(rest.split()[0])
    return (fields["MemTotal"] - fields["MemAvailable"]) / 1024


def rss_mib(pids: list[int]) -> float:
    """The summed proportional set size (PSS) of ``pids``, MiB (shared pages split)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def uss_mib(pids: list[int]) -> float:
    """The summed private memory (USS) of ``pids``, MiB: unlike PSS it does not move
    when other processes sharing the same pages (sibling monitors) come and go."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def record(name: str, **figures: object) -> None:
    """Print the figures and append them to ``$CODEX32_FIGURES`` (if set)."""
    line = json.dumps({"test": name, "at": time.strftime("%H:%M:%S"), **figures})
    print(line)
    target = os.environ.get("CODEX32_FIGURES")
    if target:
        with Path(target).open("a") as f:
            f.write(line + "\n")

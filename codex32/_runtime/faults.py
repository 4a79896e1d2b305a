"""Fault-injection points: hold a chosen step so that a test can kill a process there.

``CODEX32_FAULT_PAUSE`` names one step (``monitor.created``, ``start.placed``...) and
``CODEX32_FAULT_DIR`` a directory. The first process to reach that step creates
``DIR/STEP`` (``O_EXCL``: one pause per trial, across every process of it) holding its
host pid, then waits until ``DIR/go`` exists. The test kills whichever process it
chose meanwhile: the kill lands at a known step, not after a guessed sleep.

Read once at import; unset (always, outside tests), a step costs one comparison.
Standard library only: the monitor and the set-up processes import it.
"""

from __future__ import annotations

import os
import time

#: The variables the engine hands on to the processes it starts (``MONITOR_ENV``).
VARIABLES = ("CODEX32_FAULT_PAUSE", "CODEX32_FAULT_DIR")

_STEP = os.environ.get("CODEX32_FAULT_PAUSE", "")
_DIR = os.environ.get("CODEX32_FAULT_DIR", "")


def point(step: str) -> None:
    """Hold here if this is the step a fault test chose (see the module docstring)."""
    if step == _STEP and _DIR:
        _hold(step)


def _hold(step: str) -> None:
    try:
        fd = os.open(os.path.join(_DIR, step), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return  # this trial's pause happened already (a restart passes here again)
    except OSError:
        return  # the trial is over (its directory is gone)
    # The host's pid, also from a process in a new pid namespace: /proc is still the
    # host's until the container mounts its own.
    os.write(fd, os.readlink("/proc/self").encode())
    os.close(fd)
    go = os.path.join(_DIR, "go")
    # (A trial over, its directory gone: nothing will let go; never hold for ever.)
    while not os.path.exists(go) and os.path.isdir(_DIR):
        time.sleep(0.002)


def environment() -> dict[str, str]:
    """The fault variables set for this process, to pass on to the ones it starts."""
    return {name: os.environ[name] for name in VARIABLES if name in os.environ}

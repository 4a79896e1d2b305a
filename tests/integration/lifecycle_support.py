"""What the lifecycle tests share: a container tracker that cleans up, waits, probes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from codex32 import (
    Container,
    ContainerConfig,
    ContainerEngine,
    ContainerNotFoundError,
)

pytestmark = pytest.mark.root

# Prints "ready" once its traps are set (before that, PID 1 ignores SIGTERM).
LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"


def sh(script: str, **options: Any) -> ContainerConfig:
    """A busybox container running ``sh -c SCRIPT`` (kept after it exits)."""
    return ContainerConfig(image="busybox", command=["sh", "-c", script], **options)


def eventually(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``check`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def dead(pid: int | None) -> bool:
    """Whether the kernel says ``pid`` has exited (gone, or a zombie not yet reaped)."""
    if pid is None:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def holders(directory: Path) -> list[int]:
    """Live processes with a file (or their cwd) under ``directory`` (e.g. a monitor)."""
    prefix = f"{directory}/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            links = [f"/proc/{entry}/cwd"]
            links += [f"/proc/{entry}/fd/{fd}" for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:
            continue
        for link in links:
            with contextlib.suppress(OSError):
                if os.readlink(link).startswith(prefix):
                    found.append(int(entry))
                    break
    return found


def monitors_named(container_id: str) -> list[int]:
    """Live processes named as this container's monitor (``c32mon-ID8``), if any."""
    name = f"c32mon-{container_id[:8]}"
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as f:
                if f.read().strip() == name and not dead(int(entry)):
                    found.append(int(entry))
    return found


def ready(container: Container, times: int = 1) -> bool:
    """The container printed ``ready`` (``times`` times: once per run)."""
    return container.logs().count(b"ready\n") >= times


class Containers:
    """The containers of one test (made by the API, or by the CLI and adopted by name).

    Teardown removes each with ``force=True``, then waits until its PID 1 and its
    monitor are gone and no process holds a file in its directory: a leaked monitor
    fails the test that leaked it.
    """

    def __init__(self, engine: ContainerEngine, storage_dir: Path) -> None:
        self.engine = engine
        self.storage_dir = storage_dir
        self._refs: list[str] = []

    def create(self, config: ContainerConfig) -> Container:
        container = self.engine.containers.create(config)
        self._refs.append(container.id)
        return container

    def started(self, config: ContainerConfig) -> Container:
        container = self.create(config)
        container.start()
        return container

    def running(self, config: ContainerConfig) -> Container:
        """Start a ``LOOP`` container and wait until it is ready for signals."""
        container = self.started(config)
        assert eventually(lambda: ready(container), 15), container.logs()
        return container

    def adopt(self, ref: str) -> None:
        """Also remove ``ref`` (a name or id) at the end."""
        self._refs.append(ref)

    def cleanup(self) -> None:
        pids: list[int | None] = []
        ids: list[str] = []
        failures: list[Exception] = []
        for ref in self._refs:
            try:
                container = self.engine.containers.get(ref)
                pids += [container.record.pid, container.record.monitor_pid]
                ids.append(container.id)
                container.remove(force=True)
            except ContainerNotFoundError:
                continue
            except Exception as exc:  # remove the others all the same
                failures.append(exc)
        left: list[int] = []

        def gone() -> bool:
            left[:] = [p for p in pids if p is not None and not dead(p)]
            for container_id in ids:
                left.extend(holders(self.storage_dir / "containers" / container_id))
                left.extend(monitors_named(container_id))
            return not left

        assert eventually(gone, 15, 0.1), f"processes left behind: {left}"
        if failures:
            raise failures[0]


@pytest.fixture
def containers(engine: ContainerEngine, storage_dir: Path) -> Iterator[Containers]:
    tracker = Containers(engine, storage_dir)
    try:
        yield tracker
    finally:
        tracker.cleanup()


CODEX32 = str(Path(sys.executable).with_name("codex32"))


def cli_env(storage_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX32_", "CONTAINER_"))}
    env["CODEX32_STORAGE_DIR"] = str(storage_dir)
    env["CODEX32_CGROUP_PARENT"] = os.environ["CODEX32_CGROUP_PARENT"]  # the session's
    return env


def codex32(storage_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CODEX32, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=cli_env(storage_dir), timeout=60, check=False,
    )  # fmt: skip

"""One fault trial: start a verb with a step held, SIGKILL a chosen process there,
let go, recover as ``init_engine()`` does, and check what is left.

The pause is ``codex32/_runtime/faults.py``: the process that reaches the step writes
its host pid to ``DIR/STEP`` and waits for ``DIR/go``. The victims are named by role:

* ``caller``: the API caller (``fault_driver.py``), or for a restart-policy restart
  the short engine process the monitor runs (``codex32._engine.restart``);
* ``paused``: whichever process holds the step;
* ``forkserver``: the caller's fork server;
* ``monitor``: the container's first live monitor (``c32mon-ID8``, the top one);
* ``pid1``: the container's PID 1 (before or after its exec);
* ``exec``: the exec set-up process of an ``exec``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codex32 import ContainerEngine, ContainerNotFoundError, ContainerState
from codex32.settings import Settings

DRIVER = str(Path(__file__).with_name("fault_driver.py"))


@dataclass(frozen=True)
class Trial:
    """A kill at a step of a verb: ``verb`` on a container in ``given`` state."""

    verb: str  # run, start, stop, restart, exec, rm, crash (the restart policy's own)
    step: str
    victim: str
    isolation: str = "standard"
    network: str = "none"
    restart: str = "no"
    auto_remove: bool = False
    via: str = "api"  # the caller: fault_driver.py (the API; "pool": from a pooled
    # sandbox) or the codex32 CLI

    @property
    def id(self) -> str:
        extra = f"-{self.via}" if self.via != "api" else ""
        extra += "-rm" if self.auto_remove else ""
        extra += f"-{self.restart}" if self.restart != "no" else ""
        return f"{self.verb}-{self.step}-kill-{self.victim}-{self.isolation}-{self.network}{extra}"


# -- the processes of a container ------------------------------------------------


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a live process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    close = text.rindex(")")
    fields = text[close + 2 :].split()
    return text[text.index("(") + 1 : close], fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _nspid(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return line.split()[1:]
    except OSError:
        pass
    return []


def monitors(container_id: str) -> list[int]:
    """The container's live monitors (top processes named ``c32mon-ID8``), oldest first."""
    name = f"c32mon-{container_id[:8]}"
    named = {}
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and stat[0] == name and stat[1] not in ("Z", "X"):
            named[pid] = stat[2]
    tops = [pid for pid, parent in named.items() if parent not in named and len(_nspid(pid)) == 1]
    return sorted(tops, key=_start_time)


def _start_time(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return 0


def pid1s(container_id: str, engine: ContainerEngine) -> list[int]:
    """The container's PID 1, whether it has exec'd yet or not."""
    found: list[int] = []
    with contextlib.suppress(ContainerNotFoundError):
        record = engine.containers.get(container_id).record
        if record.pid and _alive(record.pid) and _nspid(record.pid)[-1:] == ["1"]:
            found.append(record.pid)
    name = f"c32mon-{container_id[:8]}"
    for pid in _pids():
        stat = _stat(pid)
        ns = _nspid(pid)
        if stat and stat[0] == name and _alive(pid) and len(ns) > 1 and ns[-1] == "1":
            found += [] if pid in found else [pid]
    return found


def children(parent: int, match: Callable[[int], bool]) -> list[int]:
    return [p for p in _pids() if (s := _stat(p)) and s[2] == parent and match(p) and _alive(p)]


# -- a trial -----------------------------------------------------------------------


class FaultRun:
    """One trial's pause directory and caller."""

    def __init__(self, storage_dir: Path, step: str) -> None:
        self.storage_dir = storage_dir
        self.step = step
        self.dir = Path(tempfile.mkdtemp(prefix="codex32-fault-"))
        os.chmod(self.dir, 0o777)  # a STRICT set-up process is an unprivileged host uid
        self.caller: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CODEX32_STORAGE_DIR": str(self.storage_dir),
            "CODEX32_FAULT_PAUSE": self.step,
            "CODEX32_FAULT_DIR": str(self.dir),
        }

    def call(self, *args: str, pool: bool = False) -> None:
        env = {**self.env(), "CODEX32_TEST_POOL": "1" if pool else "0"}
        self.caller = subprocess.Popen(
            [sys.executable, DRIVER, *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def call_cli(self, *args: str) -> None:
        """The caller is the ``codex32`` console script (a once-server becomes the monitor)."""
        self.caller = subprocess.Popen(
            [str(Path(sys.executable).with_name("codex32")), *args], env=self.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    def paused_pid(self, timeout: float = 30) -> int:
        """Wait until a process holds the step; its host pid."""
        marker = self.dir / self.step
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(marker.read_text())
            if self.caller is not None and self.caller.poll() is not None and not marker.exists():
                # The caller is done; the step may still come in a monitor of its.
                pass
            time.sleep(0.005)
        out = self.finish_caller(1)
        raise AssertionError(f"nothing reached step {self.step} in {timeout} s; caller: {out}")

    def wait_for_file(self, name: str, timeout: float = 30) -> None:
        """Wait until the caller creates ``DIR/NAME`` (its own signal to the test)."""
        deadline = time.monotonic() + timeout
        while not (self.dir / name).exists():
            if time.monotonic() > deadline or (self.caller and self.caller.poll() is not None):
                raise AssertionError(f"no {name} from the caller: {self.finish_caller(1)}")
            time.sleep(0.005)

    def release(self) -> None:
        (self.dir / "go").touch()

    def finish_caller(self, timeout: float = 60) -> str:
        if self.caller is None:
            return ""
        try:
            _out, err = self.caller.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.caller.kill()
            _out, err = self.caller.communicate()
            raise AssertionError(f"the caller hung after the fault: {err.decode()}") from None
        return f"exit {self.caller.returncode}: {err.decode().strip()}"

    def close(self) -> None:
        self.release()
        for entry in self.dir.iterdir():
            entry.unlink()
        self.dir.rmdir()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.005)


# -- after the fault -----------------------------------------------------------------


def recover(storage_dir: Path) -> None:
    """What ``init_engine()`` does at start-up, on a fresh engine."""
    with ContainerEngine(settings=Settings.from_env(storage_dir)) as engine:
        engine.recover()


def verdict(engine: ContainerEngine, name: str) -> str | None:
    """None if the container is consistent: gone, running with its PID 1 and its
    monitor, or exited (or created) with its exit code known; else what is wrong."""
    try:
        container = engine.containers.get(name)
    except ContainerNotFoundError:
        return None
    record = container.record
    if record.status in (ContainerState.RUNNING, ContainerState.PAUSED):
        if not (record.pid and _alive(record.pid)):
            return f"{record.status.value} without its PID 1"
        if not (record.monitor_pid and _alive(record.monitor_pid)):
            return f"{record.status.value} without a monitor"
        if monitors(record.id) != [record.monitor_pid]:
            return f"monitors {monitors(record.id)} besides the recorded {record.monitor_pid}"
        return None
    if record.status is ContainerState.RESTARTING:
        return "restarting"
    if record.status is ContainerState.EXITED and record.exit_code is None:
        return "exited with no exit code"
    if record.status is ContainerState.CREATED and record.started_at and record.exit_code is None:
        return "created after a start, with no exit code"
    if monitors(record.id):
        return f"{record.status.value} but monitors {monitors(record.id)} live"
    return None


def settle(engine: ContainerEngine, name: str, timeout: float = 20) -> str | None:
    """Wait until the container is consistent (a restart may still be under way)."""
    deadline = time.monotonic() + timeout
    while True:
        problem = verdict(engine, name)
        if problem is None or time.monotonic() > deadline:
            return problem
        time.sleep(0.05)


def log_lines(storage_dir: Path, container_id: str) -> list[str]:
    """The ``lineN`` lines in the container's log (rotated files first), as written."""
    directory = storage_dir / "containers" / container_id
    lines: list[str] = []
    for path in sorted(directory.glob("container.log*"), reverse=True):
        for raw in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(raw)
                lines.append(entry["log"].strip())
    return [line for line in lines if line.startswith("line")]


def leases(storage_dir: Path) -> set[str]:
    """Container ids holding an address lease in any network."""
    held: set[str] = set()
    for path in storage_dir.glob("networks/**/*.json"):
        with contextlib.suppress(ValueError, OSError):
            data = json.loads(path.read_text())
            if isinstance(data, dict) and isinstance(data.get("leases"), dict):
                held |= set(data["leases"])
    return held

"""Container: a handle on one container, its verbs done by the topic modules."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from codex32._cgroups.containers import ContainerStats
from codex32._engine import (
    execution,
    inspection,
    launching,
    records,
    removal,
    stopping,
    waiting,
)
from codex32._engine.results import LIVE, ExecResult
from codex32._runtime.launch import FileArg
from codex32._store.logs import LogEntry
from codex32._store.state import ContainerRecord, ContainerState
from codex32.config.container import ContainerConfig

if TYPE_CHECKING:
    from codex32._engine.engine import ContainerEngine


class Container:
    """A handle on one container (docker-py's shape: ``.id``, ``.name``, ``.state``).

    Every verb first refreshes the state from the kernel (is PID 1 still the process
    recorded, by pid and start time?), then checks that the verb is allowed.
    """

    def __init__(self, engine: ContainerEngine, record: ContainerRecord) -> None:
        self._engine = engine
        self._record = record

    def __repr__(self) -> str:
        return f"<Container {self.short_id} {self.name} {self.state.value}>"

    @property
    def id(self) -> str:
        """The 64-hex-digit id."""
        return self._record.id

    @property
    def short_id(self) -> str:
        """The first 12 digits, as Docker shows them."""
        return self._record.id[:12]

    @property
    def name(self) -> str:
        """The container's name."""
        return self._record.name

    @property
    def state(self) -> ContainerState:
        """The state as last refreshed."""
        return self._record.status

    @property
    def status(self) -> str:
        """The state's name (docker-py's ``.status``)."""
        return self._record.status.value

    @property
    def record(self) -> ContainerRecord:
        """The full state record."""
        return self._record

    @property
    def config(self) -> ContainerConfig:
        """What the container was created from."""
        stored = self._engine._store.load_config(self.id)
        return ContainerConfig.model_validate(stored, context={"stored": True})

    def reload(self) -> None:
        """Re-read the state, checked against the kernel."""
        self._record = records.refresh(self._engine, self.id)

    def start(
        self,
        *,
        restarting: bool = False,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
    ) -> None:
        """Start a created or exited container; return once it runs.

        Detached by default. With ``stdout`` (and ``stdin``, ``stderr``) descriptors the
        monitor also writes the output to them, and feeds ``stdin`` to the command, until
        the container exits: Docker's attach-then-start (``docker run`` without ``-d``).
        """
        launching.start(
            self._engine, self, restarting=restarting, stdin=stdin, stdout=stdout, stderr=stderr
        )

    def stop(self, timeout: float | None = None) -> None:
        """Send the stop signal, then SIGKILL after ``timeout`` seconds (a no-op if not running)."""
        stopping.stop(self._engine, self, timeout)

    def kill(self, signal_: str | int = "SIGKILL") -> None:
        """Send a signal to the container's PID 1."""
        stopping.kill(self._engine, self, signal_)

    def restart(self, timeout: float | None = None) -> None:
        """Stop (if running), then start; an ``--rm`` container is kept meanwhile, as
        Docker's restart keeps it."""
        launching.keep_through_restart(self._engine, self)
        self.stop(timeout)
        self.start()
        records.event(self._engine, self, "restart")

    def wait(self, timeout: float | None = None) -> int:
        """Block until the container is not running; return its exit code."""
        return waiting.wait(self._engine, self, timeout)

    def logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | None = None,
        since: float | None = None,
        timestamps: bool = False,
    ) -> bytes:
        """The container's output so far, as docker-py's ``logs()``."""
        from codex32._store.logs import format_entry, read_logs

        streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        entries = read_logs(records.log_path(self._engine, self.id), tail=tail, since=since,
                            until=None, streams=streams)  # fmt: skip
        return "".join(format_entry(e, timestamps) for e in entries).encode()

    def stream_logs(
        self,
        *,
        stdout: bool = True,
        stderr: bool = True,
        tail: int | None = None,
        since: float | None = None,
        follow: bool = True,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[LogEntry]:
        """Log entries as they come (survives rotation); ends when the container stops,
        or when ``stop()`` (asked once per poll) answers true: a caller gone."""
        from codex32._store.logs import follow_logs, read_logs

        streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        path = records.log_path(self._engine, self.id)
        if not follow:
            return read_logs(path, tail=tail, since=since, until=None, streams=streams)

        checked = [0.0]

        def stopped() -> bool:
            # Asked on every read: while PID 1 lives, look at the state at most every
            # 0.2 s (a reload reads state.json and asks the kernel); once it is gone,
            # at once, so that a short command's follow ends with it.
            now = time.monotonic()
            if now - checked[0] < 0.2 and _alive(self._record.pid):
                return stop is not None and stop()
            checked[0] = now
            if stop is not None and stop():
                return True
            waiting.reload_or_removed(self._engine, self)  # an --rm container may be gone at once
            return self.state not in LIVE

        return follow_logs(path, since=since, tail=tail, streams=streams, stop=stopped)

    def exec_run(
        self,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
        tty: bool = False,
        on_terminal: Callable[[int], None] | None = None,
    ) -> ExecResult:
        """Run ``command`` inside the running container, confined as its command is.

        Output is captured and returned unless file descriptors are given. ``tty``: the
        command gets a pseudo-terminal (its controlling terminal), relayed to
        ``stdin``/``stdout``; its output is then one stream, as ``docker exec -t``.
        ``on_terminal(master_fd)`` is called once the terminal exists, so that a remote
        caller can resize it (TIOCSWINSZ on the master) while the command runs.
        """
        return execution.exec_in(
            self._engine,
            self,
            command,
            env or {},
            user,
            workdir,
            stdin,
            stdout,
            stderr,
            tty,
            on_terminal,
        )

    def pause(self) -> None:
        """Freeze every process of the container (cgroup freezer)."""
        stopping.pause(self._engine, self, True)

    def unpause(self) -> None:
        """Thaw a paused container."""
        stopping.pause(self._engine, self, False)

    resume = unpause

    def network_settings(self) -> dict[str, object]:
        """Network mode, address, gateway, published ports, rate limits (for inspect)."""
        return self._engine._networking.settings(self.id, self.config)

    def stats(self) -> ContainerStats:
        """A sample of CPU, memory, pids, block I/O and network counters."""
        return inspection.stats(self._engine, self)

    def top(self) -> list[dict[str, object]]:
        """The container's processes (host pids), as ``docker top``."""
        return inspection.top(self._engine, self)

    def export(self, path: str | os.PathLike[str]) -> None:
        """Write the container's filesystem to ``path`` as a tar (``docker export``)."""
        execution.export(self._engine, self, Path(path))

    def remove(self, *, force: bool = False) -> None:
        """Delete the container (``force`` kills it first if it runs)."""
        removal.remove(self._engine, self, force)


def _alive(pid: int | None) -> bool:
    """Whether ``pid`` still exists (a zombie counts: its monitor reaps it at once);
    no pid: nothing to watch, so as if alive."""
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

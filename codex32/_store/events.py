"""Engine events: one JSON object per line in ``STORAGE/events.jsonl``.

Every process that changes a container (the CLI, a script, the host service, a
container's monitor) appends to the same file, so the file is the event bus: readers
(``codex32 events``, ``EventWatcher``) need no daemon. A line looks like::

    {"time":1714564800.123,"type":"container","action":"die","id":"3f2a...","name":"bot",
     "attributes":{"exitCode":"1"}}

- ``append_event`` takes an exclusive ``flock`` on the file and writes the line with one
  ``O_APPEND`` write, so lines of concurrent writers never interleave, whatever their
  length. A line left torn by a crash is ended before the next one is written, and
  readers skip what does not parse. Past ``EVENTS_MAX_BYTES`` the file moves to
  ``events.jsonl.1`` (replacing the one before); readers read both, followers carry
  on in the new file.
- Filters are Docker's ``--filter`` keys: ``container`` (id, id prefix or name), ``event``
  (the action) and ``type``. Values of one key are alternatives; keys must all match.
- ``EventHooks`` maps actions to callbacks; ``EventWatcher`` is a daemon thread that
  follows the file from "now" and dispatches what any process appends.

The monitor imports this module: standard library only; ``logging`` is loaded only
when a callback fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

EVENT_TYPES = frozenset({"container"})
ACTIONS = frozenset(
    {
        "create",
        "start",
        "die",
        "oom",
        "stop",
        "kill",
        "pause",
        "unpause",
        "restart",
        "destroy",
        "exec_start",
        "exec_die",
    }
)
FILTER_KEYS = ("container", "event", "type")

Filters = Mapping[str, Iterable[str]]
EventCallback = Callable[["Event"], None]

_READ_BLOCK = 64 * 1024


def _logger() -> logging.Logger:
    import logging

    return logging.getLogger(__name__)


@dataclass
class Event:
    """Something that happened to a container (``attributes``: exitCode, signal, ...)."""

    time: float
    type: str
    action: str
    id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """One line of JSON (no newline)."""
        return json.dumps(
            {
                "time": self.time,
                "type": self.type,
                "action": self.action,
                "id": self.id,
                "name": self.name,
                "attributes": self.attributes,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse a line written by ``to_json``; ValueError if it is not an event."""
        try:
            data = json.loads(text)
            event = cls(
                time=float(data["time"]),
                type=_text(data["type"]),
                action=_text(data["action"]),
                id=_text(data["id"]),
                name=_text(data["name"]),
                attributes={
                    _text(k): _text(v) for k, v in dict(data.get("attributes") or {}).items()
                },
            )
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"not an event line: {text[:200]!r} ({error})") from None
        return event


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


# --------------------------------------------------------------------------- writing


#: Size at which ``events.jsonl`` moves to ``events.jsonl.1`` (replacing the one
#: before): the events kept stay under twice this, as Podman bounds its events file
#: (``events_logfile_max_size``); Docker keeps only its last 256 events.
EVENTS_MAX_BYTES = 4 << 20


def rotated_path(path: Path) -> Path:
    """Where the events before the current file's are (``events.jsonl.1``)."""
    return path.with_name(path.name + ".1")


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return -1


def append_event(path: Path, event: Event, *, max_bytes: int = EVENTS_MAX_BYTES) -> None:
    """Append ``event`` as one line; safe when several processes append at once.

    A file that would grow past ``max_bytes`` is rotated first, under its lock; a
    writer that waited for the lock on a file rotated meanwhile writes to the new one.
    """
    line = (event.to_json() + "\n").encode()
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC  # read: the last byte
    while True:
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            opened = os.fstat(fd)
            if opened.st_ino != _inode(path):
                continue  # rotated while we waited: open the current file
            size = opened.st_size
            if size and size + len(line) > max_bytes:
                os.replace(path, rotated_path(path))
                continue
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer died mid-line: end that line first
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view) :]
            return
        finally:
            os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- filters


def parse_event_filters(values: Iterable[str]) -> dict[str, list[str]]:
    """``["event=die", "container=bot"]`` -> ``{"event": ["die"], "container": ["bot"]}``."""
    filters: dict[str, list[str]] = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        key, wanted = key.strip(), wanted.strip()
        if not sep or not wanted:
            raise ValueError(
                f"bad filter {value!r}: expected KEY=VALUE, e.g. event=die or container=NAME"
            )
        _check_key(key)
        filters.setdefault(key, []).append(wanted)
    return filters


def _check_key(key: str) -> None:
    if key not in FILTER_KEYS:
        raise ValueError(f"unknown filter {key!r}: use one of {', '.join(FILTER_KEYS)}")


def _compile(filters: Filters | None) -> dict[str, frozenset[str]]:
    compiled: dict[str, frozenset[str]] = {}
    for key, values in (filters or {}).items():
        _check_key(key)
        compiled[key] = frozenset(values)
    return compiled


def _matches(event: Event, filters: dict[str, frozenset[str]]) -> bool:
    for key, wanted in filters.items():
        if key == "container":
            if not (
                event.id in wanted
                or event.name in wanted
                or any(event.id.startswith(prefix) for prefix in wanted)
            ):
                return False
        elif (event.action if key == "event" else event.type) not in wanted:
            return False
    return True


# --------------------------------------------------------------------------- reading


class _EventTail:
    """Reads the events file as it grows; knows its offset and keeps incomplete lines.

    With ``from_end``, where "now" is in the file is found when the tail is made (the
    file is not kept open until the first ``read``, so an unused tail holds nothing).
    """

    def __init__(self, path: Path, *, from_end: bool) -> None:
        self.path = path
        self._fd: int | None = None
        self._ino = 0
        self._offset = 0
        self._pending = b""
        self._skip_first = False
        self._start: tuple[int, int, bool] | None = None  # (inode, offset, mid-line)
        if from_end:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return  # a file made later holds only new events
            try:
                stat = os.fstat(fd)
                size = stat.st_size
                # Started in the middle of a line being written: that line is not new.
                mid_line = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
                self._start = (stat.st_ino, size, mid_line)
            finally:
                os.close(fd)

    def _open(self) -> bool:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        self._ino = os.fstat(self._fd).st_ino
        self._offset, self._pending, self._skip_first = 0, b"", False
        if self._start is not None:
            ino, offset, mid_line = self._start
            self._start = None
            if ino == self._ino:
                self._offset, self._skip_first = offset, mid_line
        return True

    def read(self) -> list[Event]:
        """The events completed since the last call."""
        if self._fd is None and not self._open():
            return []
        events = self._read_lines()
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return events
        if stat.st_ino != self._ino or stat.st_size < self._offset:
            # Replaced or truncated (pruned): what the old file still held, then the new.
            events += self._read_lines()
            self.close()
            if self._open():
                events += self._read_lines()
        return events

    def _read_lines(self) -> list[Event]:
        assert self._fd is not None
        lines: list[bytes] = []
        while block := os.pread(self._fd, _READ_BLOCK, self._offset + len(self._pending)):
            data = self._pending + block
            last = data.rfind(b"\n")
            if last < 0:
                self._pending = data
                continue
            lines.extend(data[:last].split(b"\n"))
            self._pending = data[last + 1 :]
            self._offset += last + 1
        if lines and self._skip_first:
            lines.pop(0)
            self._skip_first = False
        return _parse(lines)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _parse(lines: Iterable[bytes]) -> list[Event]:
    events: list[Event] = []
    for line in lines:
        # A line torn by a crash, or not ours, is skipped.
        if line.strip():
            with contextlib.suppress(ValueError):
                events.append(Event.from_json(line))
    return events


def read_events(
    path: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    filters: Filters | None = None,
) -> Generator[Event, None, None]:
    """The events in the file now, oldest first, within ``since``/``until`` (inclusive)."""
    compiled = _compile(filters)
    for source in (rotated_path(path), path):  # the older events first
        tail = _EventTail(source, from_end=False)
        try:
            for event in tail.read():
                if (
                    (since is None or event.time >= since)
                    and (until is None or event.time <= until)
                    and _matches(event, compiled)
                ):
                    yield event
        finally:
            tail.close()


def follow_events(
    path: Path,
    *,
    since: float | None = None,
    filters: Filters | None = None,
    stop: Callable[[], bool],
    poll_interval: float = 0.1,
) -> Generator[Event, None, None]:
    """Events as they are appended; with ``since``, the past ones from then on first.

    Without ``since`` only events appended after this call come (as ``docker events``).
    ``stop()`` is asked once per poll; when it answers true, what was appended until
    then still comes.
    """
    compiled = _compile(filters)
    tail = _EventTail(path, from_end=since is None)
    return _follow(tail, since, compiled, stop, poll_interval, rotated_path(path))


def _follow(
    tail: _EventTail,
    since: float | None,
    filters: dict[str, frozenset[str]],
    stop: Callable[[], bool],
    poll_interval: float,
    older: Path | None = None,
) -> Generator[Event, None, None]:
    try:
        if since is not None and older is not None:  # the past reaches the rotated file
            yield from read_events(older, since=since, filters=filters)
        while True:
            stopping = stop()
            events = tail.read()
            for event in events:
                if (since is None or event.time >= since) and _matches(event, filters):
                    yield event
            if stopping:
                return
            if not events:
                time.sleep(poll_interval)
    finally:
        tail.close()


# --------------------------------------------------------------------------- hooks


class EventHooks:
    """Callbacks by action (``"*"``: every action); thread-safe.

    A callback that raises is logged and does not keep the others from running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: list[tuple[str, EventCallback]] = []

    def on(self, action: str, callback: EventCallback) -> None:
        """Call ``callback(event)`` for each event with this action."""
        if action != "*" and action not in ACTIONS:
            raise ValueError(
                f"unknown event {action!r}: use '*' or one of {', '.join(sorted(ACTIONS))}"
            )
        with self._lock:
            self._callbacks.append((action, callback))

    def off(self, action: str, callback: EventCallback) -> None:
        """Remove ``callback`` for ``action`` (nothing happens if it was not there)."""
        with self._lock:
            self._callbacks = [
                (a, c) for a, c in self._callbacks if not (a == action and c == callback)
            ]

    def dispatch(self, event: Event) -> None:
        """Run the callbacks for ``event.action`` and ``"*"``, in registration order."""
        with self._lock:
            callbacks = [c for a, c in self._callbacks if a in (event.action, "*")]
        for callback in callbacks:
            try:
                callback(event)
            except Exception:
                _logger().exception(
                    "event callback %r failed on %s %s (%s)",
                    callback,
                    event.action,
                    event.name,
                    event.id[:12],
                )


class EventWatcher:
    """A daemon thread that follows the events file from ``start()`` on and dispatches
    each new event (of any process) to ``hooks``. Callbacks run in that thread."""

    def __init__(
        self,
        path: Path,
        hooks: EventHooks,
        *,
        filters: Filters | None = None,
        poll_interval: float = 0.1,
    ) -> None:
        self.path = path
        self.hooks = hooks
        self.poll_interval = poll_interval
        self._filters = _compile(filters)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start following; every event appended after this returns is dispatched."""
        if self._thread is not None:
            raise RuntimeError("this event watcher was already started")
        tail = _EventTail(self.path, from_end=True)  # "now" is fixed before returning
        self._thread = threading.Thread(
            target=self._run, args=(tail,), name="codex32-event-watcher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop and wait for the thread (unless called from a callback, in that thread)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> EventWatcher:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, tail: _EventTail) -> None:
        last_error = ""
        try:
            while not self._stopping.is_set():
                try:
                    events = tail.read()
                except OSError as error:
                    if str(error) != last_error:  # once, not at every poll
                        _logger().warning("cannot read events from %s: %s", self.path, error)
                    last_error, events = str(error), []
                for event in events:
                    if self._stopping.is_set():
                        return
                    if _matches(event, self._filters):
                        self.hooks.dispatch(event)
                self._stopping.wait(self.poll_interval)
        finally:
            tail.close()

"""Container log files with the semantics of Docker's ``json-file`` driver.

One JSON object per line, with Docker's field names::

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00.123456789Z"}

- A line is written when its newline arrives. Text without a newline is held per stream
  until the newline comes, until it grows past ``MAX_LINE_SIZE`` (16 KiB, Docker's
  buffer), or until ``flush()``/``close()``; such an entry's ``log`` has no trailing
  newline (Docker's "partial" message). An entry carries the time its first byte
  arrived, as Docker's copier does.
- Rotation (``max-size``/``max-file``): when the next entry would take ``container.log``
  past ``max_size``, it becomes ``container.log.1``, ``.1`` becomes ``.2`` and so on;
  at most ``max_files`` files exist (the oldest is deleted). Every rotation gives the
  path a new inode (rename, or unlink when ``max_files == 1``), which is how a follower
  notices it. Rotated files are never written again.
- Writes are plain ``O_APPEND`` appends, one ``write(2)`` per batch of entries; no fsync.

Readers (``read_logs``, ``follow_logs``) read rotated files oldest first, then the
current file, and never return a line that is not complete yet. ``follow_logs`` keeps
the file descriptor of the file it is reading: when the path gets a new inode it first
reads the old descriptor to its end, then moves on to the file that came after it, so
that a rotation neither loses nor repeats an entry.

This module is imported by the container monitor: standard library only, and cheap
to import (``datetime`` is loaded only by ``parse_since``, a CLI path).
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from json.encoder import encode_basestring as _json_string  # json.dumps(s, ensure_ascii=False)
from pathlib import Path
from typing import NamedTuple

MAX_LINE_SIZE = 16 * 1024
"""Longest text of one entry, in bytes (without its newline); longer lines are split."""

STREAMS = frozenset({"stdout", "stderr"})
ALL_STREAMS: tuple[str, ...] = ("stdout", "stderr")

_READ_BLOCK = 64 * 1024


class LogEntry(NamedTuple):
    """One log line as read back: Unix time, its RFC 3339 text, stream, text."""

    time: float
    time_text: str
    stream: str
    text: str

    def format(self, timestamps: bool = False) -> str:
        """The entry as ``logs`` prints it (``timestamps``: the time and a space first)."""
        return format_entry(self, timestamps)


# --------------------------------------------------------------------------- times


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@functools.lru_cache(maxsize=4)
def _second_text(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )


def format_time_ns(time_ns: int) -> str:
    """RFC 3339 UTC text with nanoseconds, fixed width (``2024-05-01T12:00:00.000000001Z``)."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return f"{_second_text(seconds)}.{nanos:09d}Z"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})"
)


@functools.lru_cache(maxsize=256)
def _whole_seconds(date_time: str, zone: str) -> int:
    """Unix time of ``YYYY-MM-DDTHH:MM:SS`` in ``zone`` (cached: log lines share it)."""
    year, month, day = int(date_time[0:4]), int(date_time[5:7]), int(date_time[8:10])
    hour, minute, second = int(date_time[11:13]), int(date_time[14:16]), int(date_time[17:19])
    seconds = _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    if zone not in ("Z", "z"):
        offset = int(zone[1:3]) * 3600 + int(zone[4:6]) * 60
        seconds += -offset if zone[0] == "+" else offset
    return seconds


def parse_time(text: str) -> float:
    """Unix time of an RFC 3339 date-time with a zone (as a log line's ``time``)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 date-time with a zone: {text!r}")
    fraction = match.group(7)
    whole = _whole_seconds(text[:19], match.group(8))
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _fixed_nano(time_text: str) -> str:
    """Docker's RFC3339NanoFixed: nine fraction digits (other writers trim zeros)."""
    if len(time_text) == 30 or not time_text.endswith(("Z", "z")):
        return time_text
    head, _, fraction = time_text[:-1].partition(".")
    return f"{head}.{fraction:0<9.9}Z"


# --------------------------------------------------------------------------- writing


def _rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _utf8_cut(data: bytes, start: int) -> int:
    """Where to end a ``MAX_LINE_SIZE`` piece from ``start``: not inside a UTF-8 sequence."""
    limit = start + MAX_LINE_SIZE
    cut = limit
    while cut > limit - 3 and (data[cut] & 0xC0) == 0x80:  # a continuation byte
        cut -= 1
    return cut if (data[cut] & 0xC0) != 0x80 else limit


class LogWriter:
    """Appends a container's stdout/stderr to ``path`` in json-file format.

    ``write(stream, data)`` takes raw chunks as they come from the pipes; complete lines
    are written at once. ``flush()`` also writes the text held for lines that have no
    newline yet (e.g. when a stream reaches end of file); ``close()`` flushes and
    closes. ``max_size=None`` never rotates. Safe to share between threads.
    """

    def __init__(self, path: Path, max_size: int | None, max_files: int) -> None:
        if max_size is not None and max_size <= 0:
            raise ValueError(f"log max size must be a positive number of bytes, not {max_size}")
        if max_files < 1:
            raise ValueError(f"log max files must be at least 1, not {max_files}")
        self.path = path
        self.max_size = max_size
        self.max_files = max_files
        self._lock = threading.Lock()
        self._held: dict[str, tuple[int, bytes]] = {}  # stream -> (time_ns, bytes)
        self._fd: int | None = None
        self._closed = False
        self._size = 0
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def write(self, stream: str, data: bytes) -> None:
        """Add a chunk of ``stream``'s output; complete lines are written now."""
        if stream not in STREAMS:
            raise ValueError(f"unknown log stream {stream!r}: expected stdout or stderr")
        now = time.time_ns()
        with self._lock:
            if self._closed:
                raise ValueError(f"log writer for {self.path} is closed")
            started, held = self._held.pop(stream, (now, b""))
            buffer = held + data if held else data
            entries: list[tuple[int, bytes]] = []
            start = 0
            while (end := buffer.find(b"\n", start)) >= 0:
                while end - start > MAX_LINE_SIZE:
                    cut = _utf8_cut(buffer, start)
                    entries.append((started, buffer[start:cut]))
                    start = cut
                entries.append((started, buffer[start : end + 1]))
                started = now
                start = end + 1
            while len(buffer) - start > MAX_LINE_SIZE:
                cut = _utf8_cut(buffer, start)
                entries.append((started, buffer[start:cut]))
                started = now
                start = cut
            if start < len(buffer):
                self._held[stream] = (started, buffer[start:])
            self._write_entries(stream, entries)

    def flush(self) -> None:
        """Write the text held for lines without a newline, as partial entries."""
        with self._lock:
            if self._closed:
                return
            held, self._held = self._held, {}
            for stream, (started, data) in held.items():
                self._write_entries(stream, [(started, data)])

    def close(self) -> None:
        """Flush held text and close the file; closing twice is harmless."""
        try:
            self.flush()
        finally:
            with self._lock:
                self._closed = True
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    def _write_entries(self, stream: str, entries: list[tuple[int, bytes]]) -> None:
        batch: list[bytes] = []
        batch_size = 0
        for time_ns, data in entries:
            text = data.decode("utf-8", errors="replace")
            line = (
                f'{{"log":{_json_string(text)},"stream":"{stream}",'
                f'"time":"{format_time_ns(time_ns)}"}}\n'
            ).encode()
            if (
                self.max_size is not None
                and self._size + batch_size > 0
                and self._size + batch_size + len(line) > self.max_size
            ):
                self._append(b"".join(batch))
                batch, batch_size = [], 0
                self._rotate()
            batch.append(line)
            batch_size += len(line)
        if batch:
            self._append(b"".join(batch))

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._open()  # a rotation failed to open the new file: try again
            assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        """container.log -> .1 -> .2 ...; the oldest beyond max_files goes."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.max_files == 1:
            self.path.unlink(missing_ok=True)
        else:
            # Rotated files are .1 ... .k without a gap; the oldest to drop is .max_files-1.
            free = 1
            while free < self.max_files - 1 and _rotated(self.path, free).exists():
                free += 1
            _rotated(self.path, free).unlink(missing_ok=True)
            for index in range(free - 1, 0, -1):  # oldest first: readers rely on it
                os.replace(_rotated(self.path, index), _rotated(self.path, index + 1))
            os.replace(self.path, _rotated(self.path, 1))
        self._open()


# --------------------------------------------------------------------------- reading


def _decode_line(line: bytes) -> LogEntry | None:
    """A complete line (without its newline) as an entry; None if it is not one."""
    try:
        record = json.loads(line)
        time_text = record["time"]
        return LogEntry(parse_time(time_text), time_text, record["stream"], record["log"])
    except (ValueError, KeyError, TypeError):
        return None  # a line torn by a crash, or not ours: skipped, as a reader can do


class _Filter:
    def __init__(self, since: float | None, until: float | None, streams: Collection[str]) -> None:
        unknown = set(streams) - STREAMS
        if unknown:
            raise ValueError(f"unknown log stream(s) {sorted(unknown)}: use stdout, stderr")
        self.since = since
        self.until = until
        self.streams = frozenset(streams)

    def __call__(self, entry: LogEntry) -> bool:
        return (
            entry.stream in self.streams
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time <= self.until)
        )


def _ino(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


_RETRIES = 50


def _chain(path: Path) -> tuple[list[tuple[Path, int]], bool]:
    """(path, inode) of the log's files, oldest first, current last (if it exists); and
    whether the set looked whole: no gap in the numbers (a rotation shifts them)."""
    files: list[tuple[Path, int]] = []
    index = 1
    while (ino := _ino(_rotated(path, index))) is not None:
        files.append((_rotated(path, index), ino))
        index += 1
    whole = _ino(_rotated(path, index + 1)) is None
    files.reverse()
    current = _ino(path)
    if current is not None:
        files.append((path, current))
    return files, whole


def _open_chain(path: Path) -> list[int]:
    """Descriptors of the log's files, oldest first, opened as one consistent set.

    If a rotation is under way or moves files while they are opened, the set is opened
    again; a gap that stays (a writer that died while rotating) is taken as the end.
    """
    for attempt in range(_RETRIES):
        before, whole = _chain(path)
        fds: list[int] = []
        try:
            for file, ino in before:
                fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
                fds.append(fd)
                if os.fstat(fd).st_ino != ino:
                    raise FileNotFoundError(file)
            if _chain(path) == (before, whole) and (whole or attempt == _RETRIES - 1):
                return fds
        except FileNotFoundError:
            pass
        for fd in fds:
            os.close(fd)
        time.sleep(0.001)
    raise OSError(f"log {path} keeps rotating while it is being opened")


def _successor(path: Path, fd: int) -> int | None:
    """Open the file written after the one open as ``fd``; None if not there (yet).

    The file after ``.k`` is ``.k-1`` (after ``.1``: the current file). If ``fd``'s file
    was deleted, every file still there is newer than it: the oldest one comes next.
    The choice is kept only if the set of files is whole and did not change while the
    file was opened; otherwise it is tried again at the next poll.
    """
    stat = os.fstat(fd)
    chain, whole = _chain(path)
    if not whole:
        return None  # files are being shifted right now
    inodes = [ino for _, ino in chain]
    if stat.st_ino in inodes:
        position = inodes.index(stat.st_ino) + 1
    elif stat.st_nlink == 0:
        position = 0  # deleted: all the files there now came after it
    else:
        return None  # still linked but not in sight: a rename is under way
    if position >= len(chain):
        return None  # it is still the newest file: the new current is not there yet
    candidate, candidate_ino = chain[position]
    try:
        following = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    if os.fstat(following).st_ino == candidate_ino and _chain(path) == (chain, True):
        return following
    os.close(following)
    return None


class _Reader:
    """Complete lines from a descriptor, from an offset on; keeps an incomplete tail."""

    def __init__(self, fd: int, offset: int = 0) -> None:
        self.fd = fd
        self.ino = os.fstat(fd).st_ino
        self.offset = offset  # of the first byte not yet returned as (part of) a line
        self._pending = b""

    def read_lines(self) -> list[bytes]:
        """Every complete line up to the end of the file now (without newlines)."""
        lines: list[bytes] = []
        while True:
            block = os.pread(self.fd, _READ_BLOCK, self.offset + len(self._pending))
            if not block:
                return lines
            data = self._pending + block
            last = data.rfind(b"\n")
            if last < 0:
                self._pending = data
                continue
            lines.extend(data[:last].split(b"\n"))
            self._pending = data[last + 1 :]
            self.offset += last + 1

    def rewind(self) -> None:
        self.offset = 0
        self._pending = b""

    def close(self) -> None:
        os.close(self.fd)


def _lines_backwards(fd: int, end: int) -> Iterator[bytes]:
    """The lines of a file before ``end``, last line first (empty ones included)."""
    head = b""  # the start of a line whose beginning is in an earlier block
    position = end
    while position > 0:
        start = max(0, position - _READ_BLOCK)
        lines = (os.pread(fd, position - start, start) + head).split(b"\n")
        position = start
        head = lines.pop(0)
        yield from reversed(lines)
    yield head


def _complete_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none)."""
    position = size
    while position > 0:
        start = max(0, position - _READ_BLOCK)
        last = os.pread(fd, position - start, start).rfind(b"\n")
        if last >= 0:
            return start + last + 1
        position = start
    return 0


def _tail_entries(fds: list[int], count: int, keep: _Filter) -> tuple[list[LogEntry], int]:
    """The last ``count`` entries that pass ``keep``, oldest first, and the offset in the
    last file after which entries are new."""
    found: list[LogEntry] = []
    end_of_last = 0
    for index in range(len(fds) - 1, -1, -1):
        fd = fds[index]
        end = _complete_end(fd, os.fstat(fd).st_size)
        if index == len(fds) - 1:
            end_of_last = end
        if len(found) >= count:
            break
        for line in _lines_backwards(fd, end):
            entry = _decode_line(line)
            if entry is not None and keep(entry):
                found.append(entry)
                if len(found) >= count:
                    break
    found.reverse()
    return found, end_of_last


def _entries(lines: list[bytes], keep: _Filter) -> Iterator[LogEntry]:
    for line in lines:
        entry = _decode_line(line)
        if entry is not None and keep(entry):
            yield entry


def _check_tail(tail: int | None) -> None:
    if tail is not None and tail < 0:
        raise ValueError(f"tail must be a number of lines >= 0, not {tail}")


def read_logs(
    path: Path,
    *,
    tail: int | None = None,
    since: float | None = None,
    until: float | None = None,
    streams: Collection[str] = ALL_STREAMS,
) -> Generator[LogEntry, None, None]:
    """The log's entries, rotated files first, as they are now.

    ``since``/``until`` are Unix times (inclusive); ``tail`` keeps the last N entries
    among those that pass the other filters (read backwards: cheap on a big log).
    A missing log reads as empty.
    """
    keep = _Filter(since, until, streams)
    _check_tail(tail)
    fds = _open_chain(path)
    try:
        if tail is not None:
            yield from _tail_entries(fds, tail, keep)[0]
            return
        for fd in fds:
            yield from _entries(_Reader(fd).read_lines(), keep)
    finally:
        for fd in fds:
            os.close(fd)


#: A follow's first poll after output (or after it began); doubled while idle.
_FIRST_POLL = 0.005


def follow_logs(
    path: Path,
    *,
    since: float | None = None,
    tail: int | None = None,
    streams: Collection[str] = ALL_STREAMS,
    stop: Callable[[], bool],
    poll_interval: float = 0.1,
) -> Generator[LogEntry, None, None]:
    """The log's entries as ``read_logs`` gives them, then new ones as they are written.

    Follows across rotations (see the module docstring). ``stop()`` is asked once per
    poll; when it answers true, what was written up to then is still returned, and the
    iterator ends. A log that does not exist yet is waited for. An idle follow polls
    after 5 ms, then twice as long each time up to ``poll_interval``: a short command's
    follow ends a few ms after it, a quiet one costs a read every ``poll_interval``.
    """
    keep = _Filter(since, None, streams)
    _check_tail(tail)
    fds = _open_chain(path)
    reader: _Reader | None = None
    try:
        if fds:
            if tail is not None:
                entries, offset = _tail_entries(fds, tail, keep)
                yield from entries
                reader = _Reader(fds[-1], offset)
            else:
                for fd in fds[:-1]:
                    yield from _entries(_Reader(fd).read_lines(), keep)
                reader = _Reader(fds[-1])
            fds.pop()
            for fd in fds:
                os.close(fd)
            fds = []
        stopping = False
        idle = min(_FIRST_POLL, poll_interval)
        while True:
            stopping = stopping or stop()
            if reader is None:
                opened = _open_current(path)
                if opened is None:
                    if stopping:
                        return
                    time.sleep(idle)
                    idle = min(idle * 2, poll_interval)
                    continue
                reader = _Reader(opened)
            lines = reader.read_lines()
            yield from _entries(lines, keep)
            current_ino = _ino(path)
            if current_ino != reader.ino:
                # Rotated: what the old descriptor still holds comes first.
                yield from _entries(reader.read_lines(), keep)
                following = _successor(path, reader.fd)
                if following is not None:
                    reader.close()
                    reader = _Reader(following)
                    continue
            elif os.fstat(reader.fd).st_size < reader.offset:
                reader.rewind()  # truncated in place (copytruncate by another tool)
                continue
            if stopping:
                return
            if lines:
                idle = min(_FIRST_POLL, poll_interval)
            else:
                time.sleep(idle)
                idle = min(idle * 2, poll_interval)
    finally:
        if reader is not None:
            reader.close()
        for fd in fds:
            os.close(fd)


def _open_current(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def format_entry(entry: LogEntry, timestamps: bool) -> str:
    """An entry as ``logs`` prints it; ``--timestamps`` puts the time and a space first."""
    if timestamps:
        return f"{_fixed_nano(entry.time_text)} {entry.text}"
    return entry.text


# --------------------------------------------------------------------------- --since

_UNIX_TIME = re.compile(r"\d+(?:\.\d{1,9})?")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0}
_UNIT_SECONDS |= {"m": 60.0, "h": 3600.0}
_DURATION_PART = r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)"  # Go's units
_DURATION = re.compile(rf"([+-]?)((?:{_DURATION_PART})+)")
_DURATION_PARTS = re.compile(_DURATION_PART)
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt](\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?)?"
    r"([Zz]|[+-]\d{2}:\d{2})?"
)


def parse_since(value: str, now: float) -> float:
    """A ``--since``/``--until`` value as a Unix time, the forms Docker accepts.

    - a Unix timestamp: ``1700000000`` or ``1700000000.123456789``;
    - an RFC 3339 date or date-time: ``2024-05-01``, ``2024-05-01T12:00``,
      ``2024-05-01T12:00:00.5Z``, ``2024-05-01T12:00:00+02:00`` (no zone: local time);
    - a duration before ``now`` (Go syntax): ``45s``, ``10m``, ``1h30m``, ``1.5h``,
      ``300ms``.
    """
    text = value.strip()
    if _UNIX_TIME.fullmatch(text):
        return float(text)
    duration = _DURATION.fullmatch(text)
    if duration is not None:
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit]
            for number, unit in _DURATION_PARTS.findall(duration.group(2))
        )
        return now + seconds if duration.group(1) == "-" else now - seconds
    date_time = _DATE_TIME.fullmatch(text)
    if date_time is not None:
        return _date_time_seconds(value, date_time)
    raise ValueError(
        f"invalid time {value!r}: expected a Unix timestamp (1700000000.5), an RFC 3339 "
        "date-time (2024-05-01T12:00:00Z) or a duration before now (45s, 10m, 1h30m)"
    )


def _date_time_seconds(value: str, match: re.Match[str]) -> float:
    from datetime import UTC, datetime, timedelta, timezone

    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    tz: timezone | None = None
    if zone in ("Z", "z"):
        tz = UTC
    elif zone:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = timezone(offset if zone[0] == "+" else -offset)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError as error:
        raise ValueError(f"invalid time {value!r}: {error}") from None
    return moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)

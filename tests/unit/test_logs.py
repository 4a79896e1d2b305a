"""Container log files (json-file format): writing, rotation, reading, following."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from codex32._store.logs import (
    MAX_LINE_SIZE,
    LogEntry,
    LogWriter,
    follow_logs,
    format_entry,
    parse_since,
    parse_time,
    read_logs,
)

FIXED_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "container.log"


def records(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def texts(entries: Iterator[LogEntry] | list[LogEntry]) -> list[str]:
    return [entry.text for entry in entries]


def write_raw(path: Path, lines: list[tuple[str, str, str]]) -> None:
    """Write (time text, stream, text) entries by hand, as another json-file writer."""
    with path.open("a") as f:
        for time_text, stream, text in lines:
            f.write(json.dumps({"log": text, "stream": stream, "time": time_text}) + "\n")


def deadline(seconds: float) -> Callable[[], bool]:
    """A ``stop`` for a follow that must not hang a failing test."""
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end


# --------------------------------------------------------------------------- writing


def test_complete_lines_are_written_and_partial_lines_held(log: Path) -> None:
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", b"one\ntw")
        assert [r["log"] for r in records(log)] == ["one\n"]
        writer.write("stderr", b"err\n")  # the other stream does not mix in
        writer.write("stdout", b"o\nthree\nfou")
        assert [(r["stream"], r["log"]) for r in records(log)] == [
            ("stdout", "one\n"),
            ("stderr", "err\n"),
            ("stdout", "two\n"),
            ("stdout", "three\n"),
        ]
    # close() flushed the held text as a partial entry, without a newline
    last = records(log)[-1]
    assert (last["stream"], last["log"]) == ("stdout", "fou")


def test_flush_writes_held_text_as_partial_entries(log: Path) -> None:
    writer = LogWriter(log, None, 1)
    writer.write("stdout", b"no newline")
    writer.write("stderr", b"neither")
    assert log.read_bytes() == b""
    writer.flush()
    assert sorted((r["stream"], r["log"]) for r in records(log)) == [
        ("stderr", "neither"),
        ("stdout", "no newline"),
    ]
    writer.close()
    writer.close()
    assert writer.closed
    with pytest.raises(ValueError, match="closed"):
        writer.write("stdout", b"x\n")


def test_json_file_format(log: Path) -> None:
    before = time.time()
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", 'héllo "quoted" \\ \t\n'.encode())
    after = time.time()
    raw = log.read_text()
    (record,) = records(log)
    assert set(record) == {"log", "stream", "time"}
    assert record["log"] == 'héllo "quoted" \\ \t\n'
    assert raw.endswith("}\n") and raw.count("\n") == 1
    assert FIXED_NANO.fullmatch(record["time"])
    assert before - 1e-6 <= parse_time(record["time"]) <= after + 1e-6


def test_invalid_utf8_is_replaced(log: Path) -> None:
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", b"bad \xff\xfe byte\n")
    assert texts(read_logs(log)) == ["bad \ufffd\ufffd byte\n"]


def test_unknown_stream_and_bad_limits_are_refused(log: Path) -> None:
    with pytest.raises(ValueError, match="max size"):
        LogWriter(log, 0, 2)
    with pytest.raises(ValueError, match="max files"):
        LogWriter(log, 100, 0)
    with LogWriter(log, None, 1) as writer, pytest.raises(ValueError, match="stdin"):
        writer.write("stdin", b"x\n")


def test_a_long_line_is_split_at_16_kib(log: Path) -> None:
    line = b"x" * (2 * MAX_LINE_SIZE + 100) + b"\n"
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", line)
    pieces = texts(read_logs(log))
    assert [len(p) for p in pieces] == [MAX_LINE_SIZE, MAX_LINE_SIZE, 101]
    assert "".join(pieces).encode() == line
    assert not pieces[0].endswith("\n") and pieces[-1].endswith("\n")


def test_a_line_of_exactly_16_kib_is_not_split(log: Path) -> None:
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", b"y" * MAX_LINE_SIZE)  # held, not yet too long
        assert log.read_bytes() == b""
        writer.write("stdout", b"\n")
    assert [len(t) for t in texts(read_logs(log))] == [MAX_LINE_SIZE + 1]


def test_held_text_is_written_once_it_passes_16_kib(log: Path) -> None:
    with LogWriter(log, None, 1) as writer:
        for _ in range(5):
            writer.write("stdout", b"z" * 4000)  # 20000 bytes, no newline
        assert [len(t) for t in texts(read_logs(log))] == [MAX_LINE_SIZE]
        writer.write("stdout", b"\n")
    assert [len(t) for t in texts(read_logs(log))] == [MAX_LINE_SIZE, 20000 - MAX_LINE_SIZE + 1]


def test_split_never_cuts_a_utf8_character(log: Path) -> None:
    text = "é€" * 7000 + "\n"  # 2- and 3-byte characters, 35000 bytes
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", text[:5000].encode())
        writer.write("stdout", text[5000:].encode())
    pieces = texts(read_logs(log))
    assert len(pieces) == 3
    assert all(len(p.encode()) <= MAX_LINE_SIZE + 1 for p in pieces)
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) == text


def test_writer_appends_to_an_existing_log(log: Path) -> None:
    with LogWriter(log, 400, 2) as writer:
        writer.write("stdout", b"first run\n")
    with LogWriter(log, 400, 2) as writer:
        for i in range(8):
            writer.write("stdout", f"second run {i}\n".encode())
    assert log.stat().st_size <= 400
    assert texts(read_logs(log))[-1] == "second run 7\n"


# --------------------------------------------------------------------------- rotation


def rotated_files(log: Path) -> list[str]:
    return sorted(p.name for p in log.parent.iterdir())


def test_rotation_keeps_at_most_max_files_and_the_newest_data(log: Path) -> None:
    with LogWriter(log, 1000, 3) as writer:
        for i in range(200):
            writer.write("stdout", f"line {i}\n".encode())
    assert rotated_files(log) == ["container.log", "container.log.1", "container.log.2"]
    for name in rotated_files(log):
        assert (log.parent / name).stat().st_size <= 1000
    got = texts(read_logs(log))
    # oldest first, across the files, contiguous, ending with the newest line
    first = int(got[0].split()[1])
    assert got == [f"line {i}\n" for i in range(first, 200)]
    assert len(got) > 2 * 1000 // 80  # the rotated files are full, not nearly empty
    assert records(log.with_name("container.log.2"))[0]["log"] == got[0]


def test_rotation_with_one_file_keeps_only_the_current_one(log: Path) -> None:
    with LogWriter(log, 500, 1) as writer:
        for i in range(50):
            writer.write("stderr", f"line {i}\n".encode())
    assert rotated_files(log) == ["container.log"]
    assert log.stat().st_size <= 500
    assert texts(read_logs(log))[-1] == "line 49\n"


def test_an_entry_bigger_than_max_size_gets_a_file_of_its_own(log: Path) -> None:
    with LogWriter(log, 200, 3) as writer:
        writer.write("stdout", b"small\n")
        writer.write("stdout", b"B" * 500 + b"\n")
        writer.write("stdout", b"after\n")
    assert [r["log"] for r in records(log.with_name("container.log.2"))] == ["small\n"]
    assert [r["log"] for r in records(log.with_name("container.log.1"))] == ["B" * 500 + "\n"]
    assert [r["log"] for r in records(log)] == ["after\n"]


# --------------------------------------------------------------------------- reading

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def sample_log(log: Path) -> None:
    """Ten entries one second apart over a rotated file and the current one."""
    rotated = log.with_name("container.log.1")
    for i in range(10):
        stream = "stderr" if i % 3 == 0 else "stdout"
        write_raw(rotated if i < 6 else log, [(f"2024-05-01T12:00:0{i}.5Z", stream, f"e{i}\n")])


def test_read_across_rotated_files_oldest_first(log: Path) -> None:
    sample_log(log)
    entries = list(read_logs(log))
    assert texts(entries) == [f"e{i}\n" for i in range(10)]
    assert entries[3] == LogEntry(T0 + 3.5, "2024-05-01T12:00:03.5Z", "stderr", "e3\n")


def test_tail_spans_rotated_files(log: Path) -> None:
    sample_log(log)
    assert texts(read_logs(log, tail=6)) == [f"e{i}\n" for i in range(4, 10)]
    assert texts(read_logs(log, tail=100)) == [f"e{i}\n" for i in range(10)]
    assert list(read_logs(log, tail=0)) == []
    with pytest.raises(ValueError, match="tail"):
        list(read_logs(log, tail=-1))


def test_since_until_and_streams(log: Path) -> None:
    sample_log(log)
    assert texts(read_logs(log, since=T0 + 7)) == ["e7\n", "e8\n", "e9\n"]
    assert texts(read_logs(log, until=T0 + 1.5)) == ["e0\n", "e1\n"]  # inclusive
    assert texts(read_logs(log, since=T0 + 2, until=T0 + 4)) == ["e2\n", "e3\n"]
    assert texts(read_logs(log, streams={"stderr"})) == ["e0\n", "e3\n", "e6\n", "e9\n"]
    # tail counts the entries that pass the other filters
    assert texts(read_logs(log, streams={"stderr"}, tail=2)) == ["e6\n", "e9\n"]
    assert texts(read_logs(log, since=T0 + 5, tail=100)) == ["e5\n", "e6\n", "e7\n", "e8\n", "e9\n"]
    with pytest.raises(ValueError, match="stdin"):
        list(read_logs(log, streams={"stdin"}))


def test_tail_reads_backwards_over_many_blocks(log: Path) -> None:
    with LogWriter(log, None, 1) as writer:
        for i in range(5000):
            writer.write("stdout", f"line {i:05d} {'.' * 40}\n".encode())
    assert log.stat().st_size > 4 * 64 * 1024
    assert texts(read_logs(log, tail=3)) == [
        f"line {i:05d} {'.' * 40}\n" for i in (4997, 4998, 4999)
    ]
    assert len(list(read_logs(log, tail=4000))) == 4000


def test_torn_and_incomplete_lines_are_skipped(log: Path) -> None:
    write_raw(log, [("2024-05-01T12:00:00Z", "stdout", "ok\n")])
    with log.open("a") as f:
        f.write('{"log":"torn by a cra\n')
        f.write("\n")
    write_raw(log, [("2024-05-01T12:00:01Z", "stdout", "ok again\n")])
    with log.open("a") as f:
        f.write('{"log":"being written","str')  # no newline yet: not returned
    assert texts(read_logs(log)) == ["ok\n", "ok again\n"]
    assert texts(read_logs(log, tail=1)) == ["ok again\n"]


def test_a_missing_log_reads_as_empty(log: Path) -> None:
    assert list(read_logs(log)) == []
    assert list(read_logs(log, tail=5)) == []


def test_times_of_other_writers_parse() -> None:
    expected = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC).timestamp()
    assert parse_time("2024-05-01T12:00:00.25Z") == expected
    assert parse_time("2024-05-01T14:00:00.250000000+02:00") == expected
    assert parse_time("2024-05-01T09:30:00.25-02:30") == expected
    assert parse_time("2024-05-01T12:00:00Z") == expected - 0.25
    assert parse_time("1969-12-31T23:59:59Z") == -1
    for day in (datetime(1999, 12, 31, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC)):
        assert parse_time(day.strftime("%Y-%m-%dT%H:%M:%SZ")) == day.timestamp()
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time("2024-05-01 12:00")


def test_format_entry() -> None:
    entry = LogEntry(0.0, "2024-05-01T12:00:00.5Z", "stdout", "hi\n")
    assert format_entry(entry, timestamps=False) == "hi\n"
    # Docker's --timestamps: RFC3339Nano with all nine digits, then a space
    assert format_entry(entry, timestamps=True) == "2024-05-01T12:00:00.500000000Z hi\n"
    fixed = entry._replace(time_text="2024-05-01T12:00:00.123456789Z")
    assert format_entry(fixed, timestamps=True) == "2024-05-01T12:00:00.123456789Z hi\n"
    whole = entry._replace(time_text="2024-05-01T12:00:00Z")
    assert format_entry(whole, timestamps=True) == "2024-05-01T12:00:00.000000000Z hi\n"


# --------------------------------------------------------------------------- following


def test_follow_yields_existing_then_appended_entries(log: Path) -> None:
    writer = LogWriter(log, None, 1)
    writer.write("stdout", b"before\n")
    done = threading.Event()

    def produce() -> None:
        for i in range(20):
            writer.write("stdout", f"live {i}\n".encode())
            time.sleep(0.002)
        writer.close()
        done.set()

    thread = threading.Thread(target=produce)
    thread.start()
    stop_at = deadline(3)
    got = texts(follow_logs(log, stop=lambda: done.is_set() or stop_at(), poll_interval=0.005))
    thread.join()
    assert got == ["before\n"] + [f"live {i}\n" for i in range(20)]


def test_follow_finishes_the_old_file_before_the_rotated_one(log: Path) -> None:
    writer = LogWriter(log, 1000, 5)
    for name in ("a1", "a2", "a3"):
        writer.write("stdout", f"{name}\n".encode())
    follow = follow_logs(log, stop=deadline(3), poll_interval=0.005)
    assert [next(follow).text for _ in range(3)] == ["a1\n", "a2\n", "a3\n"]
    # Two lines the follower has not read yet, then a rotation.
    writer.write("stdout", b"a4\na5\n")
    writer.write("stdout", b"b1" + b"x" * 700 + b"\n")
    assert log.with_name("container.log.1").exists()
    writer.write("stdout", b"b2\n")
    got = [next(follow).text[:2] for _ in range(4)]
    assert got == ["a4", "a5", "b1", "b2"]
    writer.write("stdout", b"b3\n")
    assert next(follow).text == "b3\n"
    follow.close()
    writer.close()


@pytest.mark.parametrize("max_files", [2, 5])
def test_follow_survives_two_rotations_between_polls(log: Path, max_files: int) -> None:
    """With max_files=2 the follower's file is even deleted (it still holds it open)."""
    writer = LogWriter(log, 1000, max_files)
    writer.write("stdout", b"a1\n")
    follow = follow_logs(log, stop=deadline(3), poll_interval=0.005)
    assert next(follow).text == "a1\n"
    writer.write("stdout", b"a2\n")
    writer.write("stdout", b"b1" + b"x" * 900 + b"\n")
    writer.write("stdout", b"c1" + b"x" * 900 + b"\n")
    assert [next(follow).text[:2] for _ in range(3)] == ["a2", "b1", "c1"]
    follow.close()
    writer.close()


def test_follow_survives_unlink_rotation_with_one_file(log: Path) -> None:
    writer = LogWriter(log, 300, 1)
    writer.write("stdout", b"a1\n")
    follow = follow_logs(log, stop=deadline(3), poll_interval=0.005)
    assert next(follow).text == "a1\n"
    writer.write("stdout", b"a2\n")
    writer.write("stdout", b"b1" + b"x" * 250 + b"\n")
    assert [next(follow).text[:2] for _ in range(2)] == ["a2", "b1"]
    follow.close()
    writer.close()


def test_follow_while_a_writer_thread_rotates_many_times(log: Path) -> None:
    """Nothing lost, nothing twice, in order, while the files rotate under the reader."""
    writer = LogWriter(log, 2000, 100)
    done = threading.Event()
    count = 600

    def produce() -> None:
        for i in range(count):
            writer.write("stderr" if i % 5 == 0 else "stdout", f"n{i}\n".encode())
            if i % 25 == 0:
                time.sleep(0.001)
        writer.close()
        done.set()

    thread = threading.Thread(target=produce)
    stop_at = deadline(4)
    follow = follow_logs(log, stop=lambda: done.is_set() or stop_at(), poll_interval=0.001)
    thread.start()
    got = texts(follow)
    thread.join()
    assert len(list(log.parent.iterdir())) > 5  # it did rotate, several times
    assert got == [f"n{i}\n" for i in range(count)]


def test_follow_with_tail_since_and_streams_then_new(log: Path) -> None:
    sample_log(log)
    follow = follow_logs(log, tail=2, streams={"stderr"}, stop=deadline(3), poll_interval=0.005)
    assert [next(follow).text for _ in range(2)] == ["e6\n", "e9\n"]
    with LogWriter(log, None, 1) as writer:
        writer.write("stdout", b"not this stream\n")
        writer.write("stderr", b"new\n")
    assert next(follow).text == "new\n"
    follow.close()
    since = follow_logs(log, since=T0 + 8, stop=lambda: True)
    assert texts(since) == ["e8\n", "e9\n", "not this stream\n", "new\n"]
    assert texts(follow_logs(log, tail=0, stop=lambda: True)) == []


def test_follow_waits_for_the_log_to_appear(log: Path) -> None:
    def create() -> None:
        with LogWriter(log, None, 1) as writer:
            writer.write("stdout", b"late\n")

    follow = follow_logs(log, stop=deadline(3), poll_interval=0.005)
    timer = threading.Timer(0.05, create)
    timer.start()
    assert next(follow).text == "late\n"
    follow.close()
    timer.join()


def test_stop_still_returns_what_was_written_before(log: Path) -> None:
    with LogWriter(log, 200, 5) as writer:
        for i in range(10):
            writer.write("stdout", f"line {i}\n".encode())
    assert texts(follow_logs(log, stop=lambda: True)) == [f"line {i}\n" for i in range(10)]


# --------------------------------------------------------------------------- --since


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1714564800", 1714564800.0),
        ("1714564800.5", 1714564800.5),
        ("45s", NOW - 45),
        ("10m", NOW - 600),
        ("1h30m", NOW - 5400),
        ("1.5h", NOW - 5400),
        ("300ms", NOW - 0.3),
        ("2h45m10s", NOW - 9910),
        ("-5m", NOW + 300),
        ("2024-05-01T10:00:00Z", NOW - 7200),
        ("2024-05-01T10:00:00.25Z", NOW - 7200 + 0.25),
        ("2024-05-01T12:00:00+02:00", NOW - 7200),
        ("2024-05-01T10:00Z", NOW - 7200),
    ],
)
def test_parse_since(value: str, expected: float) -> None:
    assert parse_since(value, NOW) == pytest.approx(expected, abs=1e-6)


def test_parse_since_without_a_zone_is_local_time() -> None:
    local = datetime(2024, 5, 1, 10, 30, 0).timestamp()
    assert parse_since("2024-05-01T10:30:00", NOW) == local
    assert parse_since("2024-05-01T10:30", NOW) == local
    assert parse_since("2024-05-01", NOW) == datetime(2024, 5, 1).timestamp()
    utc = datetime(2024, 5, 1, 10, 30, tzinfo=timezone(timedelta(0)))
    assert parse_since("2024-05-01T10:30:00z", NOW) == utc.timestamp()


@pytest.mark.parametrize(
    "value", ["", "yesterday", "10x", "1h-5m", "m", "-", "2024-13-01", "2024-02-30T00:00Z", "1e5"]
)
def test_parse_since_errors(value: str) -> None:
    with pytest.raises(ValueError, match="invalid time"):
        parse_since(value, NOW)


def test_files_are_closed(log: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    sample_log(log)
    list(read_logs(log))
    list(read_logs(log, tail=2))
    list(follow_logs(log, stop=lambda: True))
    partial = follow_logs(log, stop=deadline(1))
    next(partial)
    partial.close()
    assert len(os.listdir("/proc/self/fd")) == before

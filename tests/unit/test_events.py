"""Engine events: the JSON-lines file, concurrent appends, filters, hooks, the watcher."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from codex32._store.events import (
    Event,
    EventHooks,
    EventWatcher,
    append_event,
    follow_events,
    parse_event_filters,
    read_events,
    rotated_path,
)


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    return tmp_path / "storage" / "events.jsonl"


IDS = {"bot": "b07" + "0" * 61, "web": "3eb" + "1" * 61}


def event(action: str, name: str = "bot", when: float = 1000.0, **attributes: str) -> Event:
    return Event(
        time=when,
        type="container",
        action=action,
        id=IDS[name],
        name=name,
        attributes=attributes,
    )


def actions(events: list[Event]) -> list[str]:
    return [e.action for e in events]


def deadline(seconds: float) -> Callable[[], bool]:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() > end


# A child process that appends events; it waits for a line on stdin to start, so that
# all children write at the same time.
APPENDER = """
import sys, time
from pathlib import Path
from codex32._store.events import Event, append_event
path, writer, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
limit = {"max_bytes": int(sys.argv[4])} if len(sys.argv) > 4 else {}
sys.stdin.readline()
for i in range(count):
    big = "x" * 9000 if i % 10 == 0 else ""  # > PIPE_BUF: atomicity from the lock
    append_event(path, Event(time.time(), "container", "start", writer, writer,
                             {"seq": str(i), "pad": big}), **limit)
"""


def run_appenders(path: Path, writers: list[str], count: int, *limit: str) -> None:
    """One child per writer appending ``count`` events, all released at once."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), writer, str(count), *limit],
            stdin=subprocess.PIPE,
            text=True,
        )
        for writer in writers
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
    for child in children:
        assert child.wait(timeout=20) == 0


# --------------------------------------------------------------------------- the file


def test_event_json_round_trip() -> None:
    original = event("die", exitCode="137")
    line = original.to_json()
    assert "\n" not in line
    assert json.loads(line) == {
        "time": 1000.0,
        "type": "container",
        "action": "die",
        "id": IDS["bot"],
        "name": "bot",
        "attributes": {"exitCode": "137"},
    }
    assert Event.from_json(line) == original
    assert Event.from_json(line.encode()) == original


@pytest.mark.parametrize(
    "line",
    [
        "",
        "not json",
        "[1, 2]",
        '{"time": 1, "type": "container", "action": "die", "id": "x"}',
        '{"time": "soon", "type": "container", "action": "die", "id": "x", "name": "n"}',
        '{"time": 1, "type": 2, "action": "die", "id": "x", "name": "n"}',
        '{"time": 1, "type": "c", "action": "die", "id": "x", "name": "n", "attributes": [1]}',
    ],
)
def test_from_json_refuses_what_is_not_an_event(line: str) -> None:
    with pytest.raises(ValueError, match="not an event line"):
        Event.from_json(line)


def test_append_creates_the_file_and_reads_back_in_order(events_file: Path) -> None:
    for i, action in enumerate(["create", "start", "die", "destroy"]):
        append_event(events_file, event(action, when=1000.0 + i))
    assert events_file.read_text().count("\n") == 4
    assert actions(list(read_events(events_file))) == ["create", "start", "die", "destroy"]
    assert list(read_events(events_file.with_name("missing.jsonl"))) == []


def test_a_torn_line_is_ended_and_skipped(events_file: Path) -> None:
    append_event(events_file, event("create"))
    with events_file.open("a") as f:
        f.write('{"time": 1000, "type": "contai')  # a writer died mid-line
    append_event(events_file, event("start"))
    assert actions(list(read_events(events_file))) == ["create", "start"]


def test_concurrent_appends_from_several_processes(events_file: Path) -> None:
    # Neither the file nor its directory exists: the children also race to create them.
    writers, count = ["w0", "w1", "w2", "w3"], 200
    run_appenders(events_file, writers, count)
    lines = events_file.read_bytes().split(b"\n")
    assert lines[-1] == b""
    parsed = [Event.from_json(line) for line in lines[:-1]]  # every line parses
    assert len(parsed) == len(writers) * count
    for writer in writers:
        seqs = [int(e.attributes["seq"]) for e in parsed if e.id == writer]
        assert seqs == list(range(count))  # each writer's events whole and in order


def test_the_file_rotates_and_readers_read_both(events_file: Path) -> None:
    for i in range(30):
        append_event(events_file, event("start", when=1000.0 + i), max_bytes=1000)
    older = rotated_path(events_file)
    assert older.exists() and events_file.stat().st_size <= 1000
    assert older.stat().st_size <= 1000
    times = [e.time for e in read_events(events_file)]
    # What is kept is the newest, whole and in order; older rotations are gone.
    assert times == [1000.0 + i for i in range(30 - len(times), 30)]
    assert len(times) > 1000 // len(event("start").to_json())


def test_follow_carries_on_across_a_rotation(events_file: Path) -> None:
    append_event(events_file, event("create", when=1.0))
    follow = follow_events(events_file, stop=deadline(5), poll_interval=0.005)
    seen = []
    for i in range(20):
        append_event(events_file, event("start", when=10.0 + i), max_bytes=600)
        seen.append(next(follow).time)
    follow.close()
    assert seen == [10.0 + i for i in range(20)]
    assert rotated_path(events_file).exists()
    # With since, the past comes from the rotated file too.
    past = follow_events(events_file, since=0, stop=lambda: True, poll_interval=0.005)
    kept = [e.time for e in past]
    assert kept == sorted(kept) and kept[-1] == 29.0 and len(kept) > 4


def test_concurrent_appends_across_rotations(events_file: Path) -> None:
    # One rotation half-way: writers waiting on the old file's lock move to the new one.
    writers, count = ["w0", "w1", "w2", "w3"], 200
    run_appenders(events_file, writers, count, str(500_000))
    assert rotated_path(events_file).exists()
    parsed = list(read_events(events_file))
    assert len(parsed) == len(writers) * count
    for writer in writers:
        seqs = [int(e.attributes["seq"]) for e in parsed if e.id == writer]
        assert seqs == list(range(count))


# --------------------------------------------------------------------------- filters


def test_parse_filters() -> None:
    assert parse_event_filters(
        ["event=die", "container=bot", "event=oom", " type = container "]
    ) == {
        "event": ["die", "oom"],
        "container": ["bot"],
        "type": ["container"],
    }
    assert parse_event_filters([]) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("image=busybox", "unknown filter 'image': use one of container, event, type"),
        ("event", "expected KEY=VALUE"),
        ("event=", "expected KEY=VALUE"),
        ("=die", "unknown filter ''"),
    ],
)
def test_parse_filters_errors(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_event_filters([value])


def test_read_with_filters(events_file: Path) -> None:
    append_event(events_file, event("start", "bot", 1.0))
    append_event(events_file, event("start", "web", 2.0))
    append_event(events_file, event("die", "bot", 3.0, exitCode="1"))
    append_event(events_file, event("oom", "web", 4.0))
    append_event(events_file, event("die", "web", 5.0, exitCode="137"))

    def names(filters: dict[str, list[str]]) -> list[tuple[str, str]]:
        return [(e.name, e.action) for e in read_events(events_file, filters=filters)]

    assert names({"container": ["bot"]}) == [("bot", "start"), ("bot", "die")]
    assert names({"container": ["3eb111"]}) == [("web", "start"), ("web", "oom"), ("web", "die")]
    assert names({"container": [IDS["bot"]]}) == [("bot", "start"), ("bot", "die")]
    assert names({"container": ["bo"]}) == []  # a name must match whole
    assert names({"container": ["b07", "web"]}) == names({})  # alternatives
    assert names({"event": ["die", "oom"]}) == [("bot", "die"), ("web", "oom"), ("web", "die")]
    assert names({"event": ["die"], "container": ["web"]}) == [("web", "die")]
    assert names({"type": ["container"], "event": ["start"]}) == [
        ("bot", "start"),
        ("web", "start"),
    ]
    assert names({"type": ["network"]}) == []
    with pytest.raises(ValueError, match="unknown filter"):
        names({"label": ["x"]})
    times = [e.time for e in read_events(events_file, since=2.0, until=4.0)]
    assert times == [2.0, 3.0, 4.0]


# --------------------------------------------------------------------------- follow


def test_follow_without_since_yields_only_new_events(events_file: Path) -> None:
    append_event(events_file, event("create", when=1.0))
    follow = follow_events(
        events_file, filters={"event": ["die"]}, stop=deadline(3), poll_interval=0.005
    )
    timer = threading.Timer(0.02, lambda: _append_some(events_file))
    timer.start()
    first = next(follow)
    assert (first.action, first.attributes) == ("die", {"exitCode": "3"})
    follow.close()
    timer.join()


def _append_some(path: Path) -> None:
    append_event(path, event("start", when=2.0))
    append_event(path, event("die", when=3.0, exitCode="3"))


def test_follow_with_since_yields_the_past_then_new(events_file: Path) -> None:
    for i, action in enumerate(["create", "start", "die"]):
        append_event(events_file, event(action, when=float(i)))
    follow = follow_events(events_file, since=1.0, stop=deadline(3), poll_interval=0.005)
    assert actions([next(follow), next(follow)]) == ["start", "die"]
    append_event(events_file, event("destroy", when=3.0))
    assert next(follow).action == "destroy"
    follow.close()


def test_follow_stop_returns_what_came_before(events_file: Path) -> None:
    append_event(events_file, event("create"))
    assert actions(list(follow_events(events_file, since=0.0, stop=lambda: True))) == ["create"]
    assert list(follow_events(events_file, stop=lambda: True)) == []


def test_follow_skips_a_line_being_written_when_it_starts(events_file: Path) -> None:
    append_event(events_file, event("create"))
    with events_file.open("a") as f:
        f.write('{"time": 1000, "type": "contai')  # mid-line when the follower starts
    follow = follow_events(events_file, stop=deadline(3), poll_interval=0.005)
    with events_file.open("a") as f:
        f.write('ner"}\n')
    append_event(events_file, event("start"))
    assert next(follow).action == "start"
    follow.close()


def test_follow_handles_a_pruned_file(events_file: Path) -> None:
    append_event(events_file, event("create"))
    follow = follow_events(events_file, stop=deadline(3), poll_interval=0.005)
    append_event(events_file, event("start"))
    assert next(follow).action == "start"
    events_file.unlink()  # pruned; a new file starts
    append_event(events_file, event("die"))
    assert next(follow).action == "die"
    follow.close()


# --------------------------------------------------------------------------- hooks


def test_hooks_dispatch_by_action_and_star() -> None:
    hooks = EventHooks()
    seen: list[str] = []

    def on_die(e: Event) -> None:
        seen.append(f"die:{e.attributes['exitCode']}")

    def on_any(e: Event) -> None:
        seen.append(f"any:{e.action}")

    hooks.on("die", on_die)
    hooks.on("*", on_any)
    hooks.dispatch(event("start"))
    hooks.dispatch(event("die", exitCode="2"))
    assert seen == ["any:start", "die:2", "any:die"]
    hooks.off("die", on_die)
    hooks.off("die", on_any)  # not registered for "die": nothing happens
    hooks.dispatch(event("die", exitCode="0"))
    assert seen[3:] == ["any:die"]
    with pytest.raises(ValueError, match="unknown event 'dead'"):
        hooks.on("dead", on_die)


def test_a_failing_callback_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = EventHooks()
    seen: list[str] = []

    def broken(e: Event) -> None:
        raise RuntimeError("callback bug")

    hooks.on("die", lambda e: seen.append("first"))
    hooks.on("die", broken)
    hooks.on("*", lambda e: seen.append("last"))
    with caplog.at_level(logging.ERROR, logger="codex32._store.events"):
        hooks.dispatch(event("die", exitCode="1"))
    assert seen == ["first", "last"]
    (record,) = caplog.records
    assert "failed on die bot" in record.getMessage()
    assert record.exc_info is not None and "callback bug" in str(record.exc_info[1])


# --------------------------------------------------------------------------- watcher


def test_watcher_sees_an_event_of_another_process(events_file: Path) -> None:
    threads_before = threading.active_count()
    append_event(events_file, event("create"))  # before start(): not dispatched
    hooks = EventHooks()
    seen: list[Event] = []
    arrived = threading.Event()

    def on_start(e: Event) -> None:
        seen.append(e)
        arrived.set()

    hooks.on("*", on_start)
    watcher = EventWatcher(events_file, hooks, poll_interval=0.02)
    watcher.start()
    assert watcher.running
    run_appenders(events_file, ["other"], 1)
    assert arrived.wait(timeout=5)
    latency = time.time() - seen[0].time
    assert latency < 1.0
    watcher.stop()
    assert not watcher.running
    assert threading.active_count() == threads_before
    assert [(e.id, e.action) for e in seen] == [("other", "start")]


def test_watcher_filters_stops_from_a_callback_and_starts_once(events_file: Path) -> None:
    threads_before = threading.active_count()
    hooks = EventHooks()
    seen: list[str] = []
    done = threading.Event()

    def on_any(e: Event) -> None:
        seen.append(e.name)
        watcher.stop()  # from the watcher's own thread: must not deadlock
        done.set()

    hooks.on("*", on_any)
    watcher = EventWatcher(events_file, hooks, filters={"container": ["web"]}, poll_interval=0.01)
    with watcher:
        with pytest.raises(RuntimeError, match="already started"):
            watcher.start()
        append_event(events_file, event("start", "bot"))
        append_event(events_file, event("start", "web"))
        append_event(events_file, event("die", "web"))
        assert done.wait(timeout=3)
    assert seen == ["web"]  # the stop inside the callback ended the dispatching
    assert threading.active_count() == threads_before

"""Container logs and engine events, from real containers.

Logs: stdout and stderr kept apart with their stream names, ``tail``, ``since``,
timestamps, size-bounded rotation, and ``codex32 logs --follow`` across a rotation.
Events: the lifecycle's events in order, the CLI's filters, and hooks
(``engine.on``) that see what other processes (the monitor) append.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import host_tmpdir
from lifecycle_support import (
    Containers,
    cli_env,
    codex32,
    containers,  # noqa: F401 - a pytest fixture, used by name
    eventually,
    ready,
    sh,
)

from codex32 import (
    Container,
    ContainerEngine,
    ContainerState,
)
from codex32._store.events import Event
from codex32._store.logs import parse_time

pytestmark = pytest.mark.root

CODEX32 = str(Path(sys.executable).with_name("codex32"))
# Prints "ready" once its traps are set (before that, PID 1 ignores SIGTERM).
LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


def log_files(engine: ContainerEngine, container: Container) -> list[Path]:
    directory = engine.settings.storage_dir / "containers" / container.id
    return sorted(directory.glob("container.log*"))


def raw_entries(engine: ContainerEngine, container: Container) -> list[dict[str, str]]:
    """The json-file lines of the current log file."""
    path = engine.settings.storage_dir / "containers" / container.id / "container.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def events_of(engine: ContainerEngine, container: Container) -> list[Event]:
    return list(engine.events(filters={"container": [container.id]}))


# -- logs ------------------------------------------------------------------------------


def test_stdout_and_stderr_are_kept_apart(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    container = containers.started(sh("echo out1; echo err1 >&2; echo out2; echo err2 >&2"))
    assert container.wait(timeout=10) == 0
    assert container.logs(stderr=False) == b"out1\nout2\n"
    assert container.logs(stdout=False) == b"err1\nerr2\n"
    assert sorted(container.logs().splitlines()) == [b"err1", b"err2", b"out1", b"out2"]
    by_stream: dict[str, list[str]] = {}
    for entry in raw_entries(engine, container):
        by_stream.setdefault(entry["stream"], []).append(entry["log"])
        assert RFC3339_NANO.fullmatch(entry["time"]), entry
    assert by_stream == {"stdout": ["out1\n", "out2\n"], "stderr": ["err1\n", "err2\n"]}

    proc = codex32(storage_dir, "logs", container.id)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("out1\nout2\n", "err1\nerr2\n")


def test_tail(containers: Containers, storage_dir: Path) -> None:
    container = containers.started(sh("for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; done"))
    assert container.wait(timeout=10) == 0
    assert container.logs(tail=3) == b"8\n9\n10\n"
    assert container.logs(tail=0) == b""
    assert container.logs(tail=100) == container.logs()
    assert container.logs().splitlines() == [str(i).encode() for i in range(1, 11)]
    proc = codex32(storage_dir, "logs", "--tail", "2", container.id)
    assert (proc.returncode, proc.stdout) == (0, "9\n10\n"), proc.stderr
    proc = codex32(storage_dir, "logs", "--tail", "many", container.id)
    assert proc.returncode == 125
    assert proc.stderr.startswith("codex32: error: ") and "many" in proc.stderr


def test_since_and_timestamps(containers: Containers, storage_dir: Path) -> None:
    before = time.time()
    container = containers.started(sh("echo early; sleep 0.6; echo late"))
    assert container.wait(timeout=10) == 0
    after = time.time()
    stamped = container.logs(timestamps=True).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["early", "late"]
    times = [parse_time(line.split(" ", 1)[0]) for line in stamped]
    for line in stamped:
        assert RFC3339_NANO.fullmatch(line.split(" ", 1)[0]), line
    assert before - 1 <= times[0] <= times[1] <= after + 1
    assert times[1] - times[0] >= 0.5
    middle = (times[0] + times[1]) / 2
    assert container.logs(since=middle) == b"late\n"
    assert container.logs(since=times[0]) == b"early\nlate\n"  # inclusive
    assert container.logs(since=after + 5) == b""

    proc = codex32(storage_dir, "logs", "--since", f"{middle:.6f}", container.id)
    assert (proc.returncode, proc.stdout) == (0, "late\n"), proc.stderr
    proc = codex32(storage_dir, "logs", "--since", "10m", "-t", container.id)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == stamped
    proc = codex32(storage_dir, "logs", "--since", "yesterday-ish", container.id)
    assert proc.returncode == 125 and "yesterday-ish" in proc.stderr


def test_rotation_keeps_at_most_n_files(engine: ContainerEngine, containers: Containers) -> None:
    script = 'i=0; while [ $i -lt 600 ]; do i=$((i+1)); echo "line $i of the log"; done'
    container = containers.started(sh(script, log_max_size=4096, log_max_files=3))
    assert container.wait(timeout=20) == 0
    files = log_files(engine, container)
    assert [f.name for f in files] == ["container.log", "container.log.1", "container.log.2"]
    for file in files:
        assert 0 < file.stat().st_size <= 4096, file
    numbers = [int(line.split()[1]) for line in container.logs().decode().splitlines()]
    assert numbers[-1] == 600
    assert numbers == list(range(numbers[0], 601)), "lines lost or repeated across files"
    assert numbers[0] > 1, "the oldest lines should have been rotated away"
    assert container.logs(tail=5).decode().splitlines()[0] == "line 596 of the log"


def test_rotation_with_a_single_file(engine: ContainerEngine, containers: Containers) -> None:
    script = 'i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo "line $i of the log"; done'
    container = containers.started(sh(script, log_max_size="4k", log_max_files=1))
    assert container.wait(timeout=20) == 0
    files = log_files(engine, container)
    assert [f.name for f in files] == ["container.log"]
    assert files[0].stat().st_size <= 4096
    assert container.logs().decode().splitlines()[-1] == "line 300 of the log"


def test_logs_follow_survives_rotation_and_ends_with_the_container(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    name = "logs-follow-rotation"
    total = 300
    with host_tmpdir() as data:
        script = (
            "echo ready; while [ ! -e /data/go ]; do sleep 0.02; done; i=0; "
            f'while [ $i -lt {total} ]; do i=$((i+1)); echo "line $i padding-padding"; '
            "[ $((i % 20)) -eq 0 ] && sleep 0.05; done"
        )
        containers.adopt(name)
        proc = codex32(
            storage_dir, "run", "-d", "--name", name, "--log-max-size", "4096",
            "--log-max-files", "2", "-v", f"{data}:/data", "busybox", "--", "sh", "-c", script,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        follower = subprocess.Popen(
            [CODEX32, "logs", "--follow", name], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(storage_dir),
        )  # fmt: skip
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline() == "ready\n"
            (data / "go").touch()  # only now does the container write (and rotate)
            out, err = follower.communicate(timeout=30)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
    assert follower.returncode == 0, err
    numbers = [int(line.split()[1]) for line in out.splitlines()]
    assert numbers == list(range(1, total + 1)), "the follower lost or repeated lines"
    container = engine.containers.get(name)
    assert container.state is ContainerState.EXITED
    names = [f.name for f in log_files(engine, container)]
    assert names == ["container.log", "container.log.1"], names
    assert not container.logs().startswith(b"ready\n"), "the log never rotated"


def test_stream_logs_of_an_auto_remove_container_ends_when_it_is_removed(
    engine: ContainerEngine,
) -> None:
    """Its monitor removes it as it exits: following ends with all the output, as
    ``docker logs -f`` does, instead of failing on the vanished container."""
    script = "echo line 1; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo line 2; echo line 3"
    container = engine.containers.run_detached(sh(script, auto_remove=True))
    stream = container.stream_logs()
    lines = [next(stream).text.rstrip("\n")]  # following, the log open
    container.exec_run(["touch", "/tmp/go"])
    assert eventually(lambda: not engine._store.directory(container.id).exists(), 10)
    lines += [entry.text.rstrip("\n") for entry in stream]
    assert lines == ["line 1", "line 2", "line 3"]
    assert container.state is ContainerState.REMOVED


# -- events ----------------------------------------------------------------------------


def _subsequence(wanted: list[str], actions: list[str]) -> bool:
    it = iter(actions)
    return all(action in it for action in wanted)


def test_lifecycle_events_in_order(engine: ContainerEngine, containers: Containers) -> None:
    started = time.time()
    container = containers.create(sh("trap 'exit 5' USR1; " + LOOP, name="events-in-order"))
    container.start()
    assert eventually(lambda: ready(container), 15)
    container.kill("SIGUSR1")
    assert container.wait(timeout=10) == 5
    container.start()
    assert eventually(lambda: ready(container, times=2), 15)
    container.stop(timeout=5)
    container.remove()
    events = events_of(engine, container)
    actions = [e.action for e in events]
    wanted = ["create", "start", "kill", "die", "start", "die", "stop", "destroy"]
    assert actions == wanted, actions
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert started - 1 <= events[0].time and events[-1].time <= time.time() + 1
    assert all(e.type == "container" and e.name == "events-in-order" for e in events)
    dies = [e.attributes for e in events if e.action == "die"]
    assert [d.get("exitCode") for d in dies] == ["5", "0"]
    kill = next(e for e in events if e.action == "kill")
    assert kill.attributes.get("signal") in ("10", "SIGUSR1")


def test_cli_events_filters(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    name = "events-cli-filter"
    container = containers.started(sh("exit 3", name=name))
    assert container.wait(timeout=10) == 3
    container.start()
    assert container.wait(timeout=10) == 3
    other = containers.started(sh("exit 4"))
    assert other.wait(timeout=10) == 4

    proc = codex32(
        storage_dir, "events", "--filter", f"container={name}", "--filter", "event=die", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    found = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["action"], e["name"], e["attributes"]["exitCode"]) for e in found] == [
        ("die", name, "3"),
        ("die", name, "3"),
    ]
    assert {e["id"] for e in found} == {container.id}

    proc = codex32(storage_dir, "events", "--filter", f"container={container.id[:12]}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[2] for line in lines] == ["create", "start", "die", "start", "die"]
    assert all(f"name={name}" in line for line in lines)
    assert "exitCode=3" in lines[2]

    proc = codex32(storage_dir, "events", "--filter", "colour=blue")
    assert proc.returncode == 125
    assert proc.stderr.startswith("codex32: error: ") and "colour" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_hooks_see_the_monitors_events(engine: ContainerEngine, containers: Containers) -> None:
    watcher = ContainerEngine(settings=engine.settings)
    seen: list[Event] = []
    everything: list[Event] = []
    died = threading.Event()

    def on_die(event: Event) -> None:
        seen.append(event)
        died.set()

    def on_any(event: Event) -> None:
        everything.append(event)

    try:
        watcher.on("die", on_die)
        watcher.on("*", on_any)
        with pytest.raises(ValueError, match="unknown event"):
            watcher.on("exploded", on_any)
        container = containers.started(sh("exit 7"))
        assert died.wait(10), "the die hook was not called"
        assert container.wait(timeout=10) == 7
        mine = [e for e in seen if e.id == container.id]
        assert [(e.action, e.attributes.get("exitCode")) for e in mine] == [("die", "7")]
        assert eventually(
            lambda: (
                [e.action for e in everything if e.id == container.id] == ["create", "start", "die"]
            ),
            5,
        ), [e.action for e in everything]

        watcher.off("die", on_die)
        died.clear()
        again = containers.started(sh("exit 8"))
        assert again.wait(timeout=10) == 8
        assert eventually(
            lambda: any(e.id == again.id and e.action == "die" for e in everything), 5
        )
        assert not any(e.id == again.id for e in seen), "a removed hook was still called"
    finally:
        watcher.close()

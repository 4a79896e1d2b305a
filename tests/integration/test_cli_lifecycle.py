"""The lifecycle through the ``codex32`` program, run as a real process.

The original design's quick start end to end, every verb once, concurrent starts,
``run -d`` / ``--rm`` / ``-it``, and bad input: a clear one-line error, Docker's
exit code 125, and nothing changed.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import assert_nothing_new, host_tmpdir, snapshot
from lifecycle_support import (
    Containers,
    cli_env,
    codex32,
    containers,  # noqa: F401 - a pytest fixture, used by name
    eventually,
    holders,
    ready,
    sh,
)

from codex32 import (
    Container,
    ContainerEngine,
    ContainerNotFoundError,
    ContainerState,
)

pytestmark = pytest.mark.root

CODEX32 = str(Path(sys.executable).with_name("codex32"))
REPO = Path(__file__).resolve().parents[2]
SAMPLE_BOT = REPO / "bots" / "sample_bot.py"
# Prints "ready" once its traps are set (before that, PID 1 ignores SIGTERM).
LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"
ID = re.compile(r"[0-9a-f]{64}")


def codex32_all(storage_dir: Path, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    """Run several ``codex32`` commands at once; (exit code, stdout, stderr) of each."""
    procs = [
        subprocess.Popen(
            [CODEX32, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(storage_dir),
        )
        for args in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append((proc.returncode, out, err))
    return results


def one_line_error(stderr: str) -> str:
    """The single ``codex32: error: ...`` line (no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("codex32: error: "), stderr
    return lines[0]


def state_json(storage_dir: Path, container: Container) -> Path:
    return storage_dir / "containers" / container.id / "state.json"


def events_size(storage_dir: Path) -> int:
    path = storage_dir / "events.jsonl"
    return path.stat().st_size if path.exists() else 0


# -- the quick start ---------------------------------------------------------------------


def test_quick_start(engine: ContainerEngine, containers: Containers, storage_dir: Path) -> None:
    containers.adopt("my-bot")
    proc = codex32(storage_dir, "create", "--name", "my-bot", "--image", str(SAMPLE_BOT))
    assert proc.returncode == 0, proc.stderr
    container_id = proc.stdout.strip()
    assert ID.fullmatch(container_id), proc.stdout

    proc = codex32(storage_dir, "start", "my-bot")
    assert (proc.returncode, proc.stdout.strip()) == (0, "my-bot"), proc.stderr

    proc = codex32(storage_dir, "list")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.endswith("my-bot"))
    assert row.startswith(container_id[:12]) and " Up " in row, proc.stdout

    def logs() -> str:
        result = codex32(storage_dir, "logs", "my-bot")
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert eventually(lambda: "heartbeat 2" in logs(), 15, 0.2), logs()
    assert "sample-bot started as pid 1" in logs()

    proc = codex32(storage_dir, "stats", "--no-stream", "my-bot")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert "CPU %" in header and "MEM USAGE / LIMIT" in header and "PIDS" in header
    assert len(rows) == 1 and rows[0].startswith(container_id[:12]) and "my-bot" in rows[0]

    proc = codex32(storage_dir, "stop", "my-bot")
    assert (proc.returncode, proc.stdout.strip()) == (0, "my-bot"), proc.stderr
    final = logs()
    assert "received SIGTERM, shutting down" in final
    assert re.search(r"stopped cleanly after \d+ heartbeats", final), final
    proc = codex32(storage_dir, "inspect", "my-bot")
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout)[0]["State"]
    assert (state["status"], state["exit_code"], state["signal"]) == ("exited", 0, 0)

    with host_tmpdir() as out:
        proc = codex32(storage_dir, "export", "my-bot", "-o", str(out / "my-bot.tar"))
        assert proc.returncode == 0, proc.stderr
        with tarfile.open(out / "my-bot.tar") as archive:
            names = {m.name.removeprefix("./") for m in archive.getmembers()}
            passwd = archive.extractfile("etc/passwd")
            assert passwd is not None and passwd.read().startswith(b"root:")
        assert "etc/passwd" in names
        assert "home/bot" in names

        proc = codex32(storage_dir, "export", "--state", "my-bot", "-o", str(out / "my-bot.json"))
        assert proc.returncode == 0, proc.stderr
        saved = json.loads((out / "my-bot.json").read_text())
        assert saved["State"]["id"] == container_id
        assert saved["State"]["exit_code"] == 0
        assert saved["Config"]["name"] == "my-bot"
        assert saved["Config"]["command"][-1].endswith("sample_bot.py")

    proc = codex32(storage_dir, "remove", "my-bot")
    assert (proc.returncode, proc.stdout.strip()) == (0, "my-bot"), proc.stderr
    proc = codex32(storage_dir, "list", "-a")
    assert "my-bot" not in proc.stdout
    assert not (storage_dir / "containers" / container_id).exists()
    assert not (storage_dir / "names" / "my-bot").exists()
    proc = codex32(storage_dir, "inspect", "my-bot")
    assert proc.returncode == 125 and "my-bot" in one_line_error(proc.stderr)


@pytest.mark.parametrize("form", ["--image", "positional"])
def test_bot_arguments_after_the_image(
    engine: ContainerEngine, containers: Containers, storage_dir: Path, form: str
) -> None:
    name = f"bot-args-{form.strip('-')}"
    containers.adopt(name)
    image = ["--image", str(SAMPLE_BOT), "--"] if form == "--image" else [str(SAMPLE_BOT)]
    proc = codex32(storage_dir, "create", "--name", name, *image, "--interval", "0.1")
    assert proc.returncode == 0, proc.stderr
    container = engine.containers.get(name)
    assert container.config.command[-2:] == ["--interval", "0.1"], container.config.command
    container.start()
    assert eventually(lambda: b"heartbeat 5" in container.logs(), 10, 0.1), container.logs()
    container.stop(timeout=5)
    assert container.record.exit_code == 0


# -- every verb --------------------------------------------------------------------------


def test_every_verb_through_the_cli(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    name = "cli-verbs"
    containers.adopt(name)
    script = "trap 'exit 6' USR1; " + LOOP
    proc = codex32(storage_dir, "create", "--name", name, "busybox", "--", "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    short = proc.stdout.strip()[:12]

    def status() -> str:
        return engine.containers.get(name).status

    assert status() == "created"
    assert codex32(storage_dir, "start", name).returncode == 0
    assert status() == "running"
    assert eventually(lambda: ready(engine.containers.get(name)), 15)
    proc = codex32(storage_dir, "ps", "-q")
    assert short in proc.stdout.split()
    proc = codex32(storage_dir, "top", name)
    assert proc.returncode == 0 and "sh -c trap" in proc.stdout, proc.stderr

    assert codex32(storage_dir, "pause", name).returncode == 0
    assert status() == "paused"
    assert re.search(rf"{short} .* Paused .* {name}", codex32(storage_dir, "ps").stdout)
    assert codex32(storage_dir, "unpause", name).returncode == 0
    assert status() == "running"

    proc = codex32(storage_dir, "kill", "-s", "USR1", name)
    assert proc.returncode == 0, proc.stderr
    proc = codex32(storage_dir, "wait", name)
    assert (proc.returncode, proc.stdout.strip()) == (0, "6"), proc.stderr
    proc = codex32(storage_dir, "ps", "-a", "--json")
    listed = next(r for r in json.loads(proc.stdout) if r["name"] == name)
    assert (listed["status"], listed["exit_code"]) == ("exited", 6)

    proc = codex32(storage_dir, "restart", name)
    assert proc.returncode == 0, proc.stderr
    assert status() == "running"
    started = time.monotonic()
    proc = codex32(storage_dir, "stop", "-t", "1", name)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15
    assert status() == "exited"
    proc = codex32(storage_dir, "rm", name)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ContainerNotFoundError):
        engine.containers.get(name)


def test_exec_through_the_cli(containers: Containers, storage_dir: Path) -> None:
    container = containers.running(sh(LOOP))
    proc = codex32(
        storage_dir, "exec", "-e", "A=1", "-u", "bot", "-w", "/tmp", container.name, "--",
        "sh", "-c", 'echo "$A $(id -u) $(pwd)"; echo oops >&2; exit 4',
    )  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (4, "1 1000 /tmp\n", "oops\n")
    container.stop(timeout=5)
    proc = codex32(storage_dir, "exec", container.name, "--", "true")
    assert proc.returncode == 125
    assert "exited" in one_line_error(proc.stderr)


# -- two starts at once ------------------------------------------------------------------


def test_concurrent_starts_start_it_once(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    container = containers.create(sh(LOOP, name="started-at-once"))
    results = codex32_all(storage_dir, [["start", "started-at-once"]] * 4)
    codes = [code for code, _, _ in results]
    assert 0 in codes, results
    for code, _, err in results:
        if code != 0:
            assert code == 125
            assert "already running" in one_line_error(err)
    container.reload()
    assert container.state is ContainerState.RUNNING
    starts = list(engine.events(filters={"container": [container.id], "event": ["start"]}))
    assert len(starts) == 1, starts
    # One monitor: the only process holding the container's files (its log).
    directory = storage_dir / "containers" / container.id
    assert holders(directory) == [container.record.monitor_pid]
    inits = [p for p in container.top() if str(p["command"]).startswith("sh -c trap")]
    assert [p["pid"] for p in inits] == [container.record.pid]


# -- bad input ---------------------------------------------------------------------------

UNKNOWN = "no-such-container-zz"


def test_unknown_container_is_a_clear_error_that_changes_nothing(storage_dir: Path) -> None:
    with host_tmpdir() as out:
        commands = [
            ["start", UNKNOWN], ["stop", UNKNOWN], ["kill", UNKNOWN], ["wait", UNKNOWN],
            ["rm", "-f", UNKNOWN], ["logs", "-f", UNKNOWN], ["inspect", UNKNOWN],
            ["exec", UNKNOWN, "--", "true"], ["export", UNKNOWN, "-o", str(out / "x.tar")],
        ]  # fmt: skip
        before = snapshot(storage_dir)
        events_before = events_size(storage_dir)
        results = codex32_all(storage_dir, commands)
        for args, (code, stdout, stderr) in zip(commands, results, strict=True):
            assert code == 125, (args, code, stderr)
            assert stdout == "", (args, stdout)
            line = one_line_error(stderr)
            assert UNKNOWN in line and "no such container" in line, (args, line)
        assert os.listdir(out) == []
    assert_nothing_new(before, storage_dir)
    assert events_size(storage_dir) == events_before


def test_duplicate_name_is_refused(containers: Containers, storage_dir: Path) -> None:
    first = containers.create(sh("true", name="dup-name"))
    saved = state_json(storage_dir, first).read_bytes()
    before = snapshot(storage_dir)
    events_before = events_size(storage_dir)
    for verb in (["create"], ["run", "--rm"], ["run", "-d"]):
        proc = codex32(storage_dir, *verb, "--name", "dup-name", "busybox", "--", "true")
        assert proc.returncode == 125, (verb, proc.stderr)
        line = one_line_error(proc.stderr)
        assert "dup-name" in line and "already in use" in line
        assert proc.stdout == ""
    assert_nothing_new(before, storage_dir)
    assert events_size(storage_dir) == events_before
    assert state_json(storage_dir, first).read_bytes() == saved
    assert os.readlink(storage_dir / "names" / "dup-name").endswith(first.id)


def test_illegal_transitions_change_nothing(containers: Containers, storage_dir: Path) -> None:
    running = containers.running(sh(LOOP))
    exited = containers.started(sh("exit 2"))
    assert exited.wait(timeout=10) == 2
    saved = {c.id: state_json(storage_dir, c).read_bytes() for c in (running, exited)}
    before = snapshot(storage_dir)
    events_before = events_size(storage_dir)
    cases = [
        (["start", running.name], "already running"),
        (["rm", running.name], "cannot remove a running container"),
        (["unpause", running.name], "running"),
        (["pause", exited.name], "exited"),
        (["kill", exited.name], "exited"),
        (["exec", exited.name, "--", "true"], "exited"),
    ]
    results = codex32_all(storage_dir, [args for args, _ in cases])
    for (args, needle), (code, stdout, stderr) in zip(cases, results, strict=True):
        assert code == 125, (args, stderr)
        line = one_line_error(stderr)
        assert needle in line, (args, line)
        assert stdout == "", (args, stdout)
    assert_nothing_new(before, storage_dir)
    assert events_size(storage_dir) == events_before
    for c in (running, exited):
        assert state_json(storage_dir, c).read_bytes() == saved[c.id], c.name
    running.reload()
    assert running.state is ContainerState.RUNNING
    assert running.record.pid is not None and os.path.exists(f"/proc/{running.record.pid}")


def test_bad_signal_is_refused(containers: Containers, storage_dir: Path) -> None:
    container = containers.running(sh(LOOP))
    saved = state_json(storage_dir, container).read_bytes()
    events_before = events_size(storage_dir)
    bad = ["SIGNOPE", "KILLME", "999", "-1"]
    results = codex32_all(storage_dir, [["kill", "-s", b, container.name] for b in bad])
    for signal_, (code, stdout, stderr) in zip(bad, results, strict=True):
        assert code == 125, (signal_, stderr)
        assert signal_ in one_line_error(stderr)
        assert stdout == ""
    assert state_json(storage_dir, container).read_bytes() == saved
    assert events_size(storage_dir) == events_before
    container.reload()
    assert container.state is ContainerState.RUNNING


def test_unwritable_export_path_changes_nothing(containers: Containers, storage_dir: Path) -> None:
    container = containers.running(sh(LOOP))
    saved = state_json(storage_dir, container).read_bytes()
    with host_tmpdir() as out:
        missing = out / "no" / "such" / "folder"
        cases = [
            ["export", container.name, "-o", str(missing / "x.tar")],
            ["export", "--state", container.name, "-o", str(missing / "x.json")],
            ["export", container.name, "-o", str(out)],  # a directory
            ["export", "--state", container.name, "-o", str(out)],
        ]
        before = snapshot(storage_dir)
        results = codex32_all(storage_dir, cases)
        for args, (code, stdout, stderr) in zip(cases, results, strict=True):
            assert code == 125, (args, stderr)
            line = one_line_error(stderr)
            assert args[-1] in line, (args, line)
            assert stdout == ""
        assert os.listdir(out) == []
    assert_nothing_new(before, storage_dir)
    assert state_json(storage_dir, container).read_bytes() == saved


# -- run -d, --rm, -it -------------------------------------------------------------------


def test_run_detached_returns_the_id_at_once(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    containers.adopt("run-detached")
    started = time.monotonic()
    proc = codex32(
        storage_dir, "run", "-d", "--name", "run-detached", "busybox", "--", "sleep", "60"
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert ID.fullmatch(proc.stdout.strip()), proc.stdout
    assert proc.stderr == ""
    assert elapsed < 15  # not the 60 s the command runs
    container = engine.containers.get(proc.stdout.strip())
    assert container.name == "run-detached"
    assert container.state is ContainerState.RUNNING


def test_run_rm_leaves_nothing(engine: ContainerEngine, storage_dir: Path) -> None:
    before = snapshot(storage_dir)
    proc = codex32(storage_dir, "run", "--rm", "--name", "run-rm", "busybox", "--", "echo", "bye")
    assert (proc.returncode, proc.stdout) == (0, "bye\n"), proc.stderr
    assert eventually(lambda: snapshot(storage_dir) == before, 10, 0.05)
    assert_nothing_new(before, storage_dir)
    destroyed = list(engine.events(filters={"container": ["run-rm"], "event": ["destroy"]}))
    assert destroyed, "no destroy event for the --rm container"

    proc = codex32(storage_dir, "run", "-d", "--rm", "busybox", "--", "sleep", "0.3")
    assert proc.returncode == 0, proc.stderr
    container_id = proc.stdout.strip()
    assert eventually(lambda: not (storage_dir / "containers" / container_id).exists(), 10)
    assert eventually(lambda: snapshot(storage_dir) == before, 10, 0.05)
    assert_nothing_new(before, storage_dir)


def _read_until(fd: int, done: Callable[[bytes], bool], timeout: float) -> bytes:
    """Read a pty until ``done(output)`` or end of file (EIO) or ``timeout``."""
    output = b""
    deadline = time.monotonic() + timeout
    while not done(output):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        output += chunk
    return output


def test_run_it_is_an_interactive_shell(containers: Containers, storage_dir: Path) -> None:
    containers.adopt("run-it-shell")
    argv = [CODEX32, "run", "--rm", "-it", "--name", "run-it-shell", "busybox", "sh"]
    env = cli_env(storage_dir) | {"TERM": "dumb"}
    output, code = _on_a_pty(argv, env, b"echo hi; exit 3\r")
    lines = [line.strip() for line in output.replace(b"\r", b"").split(b"\n")]
    assert b"hi" in lines, output
    assert code == 3, output


def _on_a_pty(argv: list[str], env: dict[str, str], typed: bytes) -> tuple[bytes, int]:
    """Run the CLI on a pty; after its first prompt, type ``typed``; (output, exit code)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: become the CLI on the pty
        try:
            os.execve(CODEX32, argv, env)
        finally:
            os._exit(127)
    try:
        prompt = _read_until(master, lambda out: b"# " in out, 30)
        assert b"# " in prompt, prompt
        os.write(master, typed)
        output = _read_until(master, lambda out: False, 30)
        deadline = time.monotonic() + 10
        while (status := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, f"the CLI did not exit: {output!r}"
            time.sleep(0.05)
        pid = 0
    finally:
        if pid:  # (a failed check: the CLI and its container go)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)
    return output, os.waitstatus_to_exitcode(status[1])


def test_run_it_and_exec_it_give_a_terminal_of_the_containers_own(
    containers: Containers, storage_dir: Path
) -> None:
    """As docker: the shell's stdio is a terminal named in the container's /dev/pts and
    is its controlling terminal (/dev/tty opens)."""
    env = cli_env(storage_dir) | {"TERM": "dumb"}
    probe = b"tty; : </dev/tty && echo ctty-ok; exit 4\r"
    containers.adopt("exec-it-target")
    started = codex32(storage_dir, "run", "-d", "--name", "exec-it-target", "busybox",
                      "sleep", "600")  # fmt: skip
    assert started.returncode == 0, started.stderr
    for argv in (
        [CODEX32, "run", "--rm", "-it", "--name", "run-it-tty", "busybox", "sh"],
        [CODEX32, "exec", "-it", "exec-it-target", "sh"],
    ):
        containers.adopt("run-it-tty")
        output, code = _on_a_pty(argv, env, probe)
        lines = [line.strip() for line in output.replace(b"\r", b"").split(b"\n")]
        assert code == 4, (argv, output)
        assert any(re.fullmatch(rb"/dev/pts/\d+", line) for line in lines), (argv, output)
        assert b"ctty-ok" in lines, (argv, output)


def test_limits_mode_is_checked_and_kept(containers: Containers, storage_dir: Path) -> None:
    bad = codex32(storage_dir, "create", "--limits", "maybe", "busybox", "true")
    assert bad.returncode == 125 and "use enforce or best-effort" in bad.stderr, bad.stderr
    containers.adopt("limits-best-effort")
    made = codex32(storage_dir, "create", "--name", "limits-best-effort", "--limits",
                   "best-effort", "--pids-limit", "20", "busybox", "true")  # fmt: skip
    assert made.returncode == 0, made.stderr
    record = json.loads(codex32(storage_dir, "inspect", "limits-best-effort").stdout)
    text = json.dumps(record)
    assert '"best_effort": true' in text and '"pids_limit": 20' in text, text

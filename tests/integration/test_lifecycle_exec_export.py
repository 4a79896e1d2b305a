"""``exec`` into running containers and ``export`` of their filesystems.

exec must land in the container's namespaces, as its user or the one asked for,
with its environment plus ``env``, in ``workdir``, and under the same confinement
(capabilities, seccomp) as the container's own command. export writes the
container's filesystem (template + its changes) as a tar, and a failed export
changes nothing.
"""

from __future__ import annotations

import os
import tarfile
import threading
from pathlib import Path

import pytest
from helpers import NAMESPACES, facts, host_tmpdir, status_fields
from lifecycle_support import (
    Containers,
    containers,  # noqa: F401 - a pytest fixture, used by name
    eventually,
    ready,
    sh,
)

from codex32 import (
    ContainerEngine,
    ContainerError,
    IsolationType,
    StateError,
    Ulimit,
)

pytestmark = pytest.mark.root

# Prints "ready" once its traps are set (before that, PID 1 ignores SIGTERM).
LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"


def text(result_output: bytes) -> str:
    return result_output.decode(errors="replace")


# -- exec ------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [IsolationType.STANDARD, IsolationType.STRICT])
def test_exec_joins_the_containers_namespaces(containers: Containers, level: IsolationType) -> None:
    container = containers.running(sh(LOOP, isolation=level))
    pid1 = container.record.pid
    script = "; ".join(f"echo {ns}=$(readlink /proc/self/ns/{ns})" for ns in NAMESPACES)
    result = container.exec_run(["sh", "-c", script])
    assert result.exit_code == 0, text(result.error_output)
    inside = facts(text(result.output))
    theirs = {ns: os.readlink(f"/proc/{pid1}/ns/{ns}") for ns in NAMESPACES}
    # /proc/PID/ns/time of PID 1 is where it lives (its children too).
    assert inside == theirs
    ours = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}
    expected_own = {"pid", "mnt", "uts", "ipc", "net", "cgroup"}
    if level is IsolationType.STRICT:
        expected_own.add("user")
    for ns in expected_own:
        assert inside[ns] != ours[ns], f"exec is in the host's {ns} namespace"
    # It sees the container's processes, and its own root (the busybox template).
    result = container.exec_run(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /"])
    lines = text(result.output).splitlines()
    assert lines[0].startswith("sh -c trap"), lines
    assert "bin" in lines[1:] and "home" in lines[1:]


def test_exec_user_env_workdir_and_exit_code(containers: Containers) -> None:
    container = containers.running(sh(LOOP, env={"FROM_CONFIG": "yes"}, working_dir="/root"))
    script = 'echo "uid=$(id -u)"; echo "cwd=$(pwd)"; echo "config=$FROM_CONFIG"; echo "g=$G"'

    plain = container.exec_run(["sh", "-c", script])
    assert plain.exit_code == 0
    assert facts(text(plain.output)) == {"uid": "0", "cwd": "/root", "config": "yes", "g": ""}

    asked = container.exec_run(
        ["sh", "-c", script],
        user="bot",
        env={"G": "hello world", "FROM_CONFIG": "overridden"},
        workdir="/tmp",
    )
    assert asked.exit_code == 0, text(asked.error_output)
    assert facts(text(asked.output)) == {
        "uid": "1000",
        "cwd": "/tmp",
        "config": "overridden",
        "g": "hello world",
    }
    by_number = container.exec_run(["sh", "-c", script], user="65534:65534", workdir="/")
    assert facts(text(by_number.output))["uid"] == "65534", text(by_number.error_output)

    code = container.exec_run(["sh", "-c", "echo to-out; echo to-err >&2; exit 5"])
    assert (code.exit_code, code.output, code.error_output) == (5, b"to-out\n", b"to-err\n")
    # exec output is the caller's, not the container's log.
    assert b"to-out" not in container.logs()


def test_exec_needs_a_running_container(engine: ContainerEngine, containers: Containers) -> None:
    container = containers.started(sh("exit 0"))
    assert container.wait(timeout=10) == 0
    with pytest.raises(StateError, match="exited") as raised:
        container.exec_run(["true"])
    assert container.name in str(raised.value)

    created = engine.containers.create(sh("true"))
    try:
        with pytest.raises(StateError, match="created"):
            created.exec_run(["true"])
    finally:
        created.remove(force=True)


def test_exec_in_a_strict_container_is_confined(containers: Containers) -> None:
    container = containers.running(sh(LOOP, isolation=IsolationType.STRICT))
    result = container.exec_run(["cat", "/proc/self/status"])
    assert result.exit_code == 0, text(result.error_output)
    status = status_fields(text(result.output))
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == 0
    assert status["Seccomp"] == "2"
    assert status["NoNewPrivs"] == "1"
    # uid 0 inside is an unprivileged uid outside.
    maps = text(container.exec_run(["cat", "/proc/self/uid_map"]).output).split()
    assert maps[0] == "0" and maps[1] != "0"
    # As the container itself: root filesystem read-only, even for exec.
    denied = container.exec_run(["touch", "/made-by-exec"])
    assert denied.exit_code != 0
    assert b"Read-only file system" in denied.error_output


@pytest.mark.parametrize("level", list(IsolationType))
def test_run_with_a_tty_gets_a_terminal_of_its_own(
    engine: ContainerEngine, level: IsolationType
) -> None:
    # The container's PID 1 opens it from its own /dev/pts and keeps it as its
    # controlling terminal; the monitor logs what it prints.
    script = "tty; : </dev/tty && echo ctty-ok; [ -t 0 ] && echo stdin-tty"
    config = sh(script, isolation=level, tty=True, auto_remove=True)
    result = engine.containers.run(config)
    assert result.exit_code == 0, result
    assert text(result.output).replace("\r", "").split() == ["/dev/pts/0", "ctty-ok", "stdin-tty"]


def test_exec_tty_to_a_caller_that_stops_reading_does_not_hang(containers: Containers) -> None:
    # `codex32 exec -t c cat big | head -1`: the relay gets EPIPE; it must keep
    # draining the terminal, or the command blocks on it for good.
    container = containers.running(sh(LOOP))
    reader, writer = os.pipe()
    os.close(reader)
    outcome: list[int] = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            container.exec_run(
                ["head", "-c", "4000000", "/dev/zero"], tty=True, stdout=writer
            ).exit_code
        ),
        daemon=True,
    )
    try:
        worker.start()
        worker.join(timeout=60)
        assert outcome == [0], "exec -t hung on a caller that stopped reading"
    finally:
        os.close(writer)


@pytest.mark.parametrize("level", [IsolationType.STANDARD, IsolationType.STRICT])
def test_a_users_terminal_is_the_users(
    engine: ContainerEngine, containers: Containers, level: IsolationType
) -> None:
    # As runc: the terminal on a non-root user's stdio is given to that user, who
    # can then reopen it by name (screen, mesg, a password prompt).
    probe = "t=$(tty); stat -c %u $t; echo reopened > $t"
    result = engine.containers.run(
        sh(probe, isolation=level, tty=True, user="bot", auto_remove=True)
    )
    assert result.exit_code == 0, result
    assert text(result.output).replace("\r", "").split() == ["1000", "reopened"]
    container = containers.running(sh(LOOP, isolation=level))
    execd = container.exec_run(["sh", "-c", probe], tty=True, user="bot")
    assert execd.exit_code == 0, execd
    assert text(execd.output).replace("\r", "").split() == ["1000", "reopened"]


@pytest.mark.parametrize("level", [IsolationType.STANDARD, IsolationType.STRICT])
def test_exec_with_a_tty_gets_a_controlling_terminal(
    containers: Containers, level: IsolationType
) -> None:
    # As `docker exec -t`: stdio is a terminal of the container's own /dev/pts, the
    # command's controlling one (so /dev/tty opens); stdout and stderr are one stream.
    container = containers.running(sh(LOOP, isolation=level))
    script = "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys; : < /dev/tty && echo ctty; echo err >&2"
    result = container.exec_run(["sh", "-c", script], tty=True)
    assert result.exit_code == 0, text(result.output)
    lines = text(result.output).replace("\r\n", "\n").split("\n")
    assert lines[0].startswith("/dev/pts/"), lines
    assert lines[1:4] == ["both-ttys", "ctty", "err"], lines
    assert result.error_output == b""
    reader, writer = os.pipe()  # what the caller types reaches the command
    os.write(writer, b"hello\n")
    os.close(writer)
    try:
        typed = container.exec_run(["sh", "-c", "read x; echo got:$x"], tty=True, stdin=reader)
    finally:
        os.close(reader)
    assert typed.exit_code == 0 and "got:hello" in text(typed.output), typed
    plain = container.exec_run(["sh", "-c", "tty; : < /dev/tty"])
    assert plain.exit_code != 0 and text(plain.output).strip() == "not a tty"


def test_exec_gets_the_containers_ulimits(containers: Containers) -> None:
    # As `docker exec`: the exec'd process runs under the container's rlimits.
    limits = [Ulimit(name="nofile", soft=64, hard=96), Ulimit(name="nproc", soft=77, hard=77)]
    container = containers.running(sh(LOOP, ulimits=limits))
    result = container.exec_run(["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u"])
    assert result.exit_code == 0, text(result.error_output)
    assert text(result.output).split() == ["64", "96", "77"]


@pytest.mark.parametrize("level", list(IsolationType), ids=lambda lv: lv.value)
def test_exec_starts_with_no_signal_ignored_or_blocked(
    containers: Containers, level: IsolationType
) -> None:
    """As runc's exec: default dispositions and an empty mask, whatever the engine had."""
    container = containers.running(sh(LOOP, isolation=level))
    result = container.exec_run(["cat", "/proc/self/status"])
    assert result.exit_code == 0, text(result.error_output)
    fields = status_fields(text(result.output))
    assert (fields["SigIgn"], fields["SigBlk"]) == ("0000000000000000", "0000000000000000")
    piped = container.exec_run(
        ["timeout", "30", "sh", "-c", 'yes BBBB | tr -d "\\n" | head -c 100000 | wc -c']
    )
    assert text(piped.output).split() == ["100000"], text(piped.error_output)


# -- export ----------------------------------------------------------------------------


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as archive:
        return {m.name.removeprefix("./"): m for m in archive.getmembers()}


def _read(path: Path, name: str) -> bytes:
    with tarfile.open(path) as archive:
        member = archive.extractfile(name)
        assert member is not None, name
        return member.read()


def test_export_writes_the_containers_filesystem(containers: Containers) -> None:
    script = "echo made > /root/made.txt; rm /etc/hostname; " + LOOP
    container = containers.running(sh(script))
    with host_tmpdir() as out:
        running_tar = out / "running.tar"
        container.export(running_tar)
        members = _members(running_tar)
        assert "etc/passwd" in members
        assert b"bot:x:1000:1000" in _read(running_tar, "etc/passwd")
        assert "bin/busybox" in members
        assert _read(running_tar, "root/made.txt") == b"made\n"
        assert "etc/hostname" not in members, "a file deleted in the container came back"
        assert members["etc/passwd"].uid == 0

        container.stop(timeout=5)
        stopped_tar = out / "stopped.tar"
        container.export(stopped_tar)
        assert set(_members(stopped_tar)) == set(members)
        assert sorted(os.listdir(out)) == ["running.tar", "stopped.tar"]  # no temp files


def test_export_of_a_strict_container_has_unshifted_ids(containers: Containers) -> None:
    container = containers.started(
        sh("echo made > /tmp/x; " + LOOP, isolation=IsolationType.STRICT)
    )
    assert eventually(lambda: ready(container), 10)
    with host_tmpdir() as out:
        container.export(out / "strict.tar")
        members = _members(out / "strict.tar")
    assert members["etc/passwd"].uid == 0 and members["etc/passwd"].gid == 0
    assert members["home/bot"].uid == 1000


@pytest.mark.parametrize("where", ["missing-folder", "a-directory"])
def test_a_failed_export_changes_nothing(
    engine: ContainerEngine, containers: Containers, where: str
) -> None:
    container = containers.running(sh(LOOP))
    state_json = engine.settings.storage_dir / "containers" / container.id / "state.json"
    before = state_json.read_bytes()
    entries_before = sorted(os.listdir(state_json.parent))
    with host_tmpdir() as out:
        (out / "keep").write_text("x")
        target = out / "no" / "such" / "x.tar" if where == "missing-folder" else out
        with pytest.raises(ContainerError) as raised:
            container.export(target)
        message = str(raised.value)
        assert str(target) in message or "export" in message
        assert container.name in message
        assert sorted(os.listdir(out)) == ["keep"]
        assert (out / "keep").read_text() == "x"
    assert state_json.read_bytes() == before
    assert sorted(os.listdir(state_json.parent)) == entries_before
    container.reload()
    assert container.status == "running"


def test_exec_output_can_go_to_a_file(containers: Containers) -> None:
    container = containers.running(sh(LOOP))
    with host_tmpdir() as out:
        target = out / "exec.out"
        with open(target, "wb") as f:
            result = container.exec_run(["sh", "-c", "echo into-the-file"], stdout=f.fileno())
        assert result.exit_code == 0
        assert result.output == b""
        assert target.read_bytes() == b"into-the-file\n"
    assert container.exec_run(["cat", "/etc/passwd"]).output.startswith(b"root:x:0:0")

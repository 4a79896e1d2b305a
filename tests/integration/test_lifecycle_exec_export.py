"""``exec`` into running containers and ``export`` of their filesystems.

exec must land in the container's namespaces, as its user or the one asked for,
with its environment plus ``env``, in ``workdir``, and under the same confinement
(capabilities, seccomp) as the container's own command. export writes the
container's filesystem (template + its changes) as a tar, and a failed export
changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import NAMESPACES, facts, host_tmpdir, status_fields

from codex32 import (
    Container,
    ContainerConfig,
    ContainerEngine,
    ContainerError,
    ContainerNotFoundError,
    IsolationType,
    StateError,
)

pytestmark = pytest.mark.root

# Prints "ready" once its traps are set (before that, PID 1 ignores SIGTERM).
LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"


def sh(script: str, **options: Any) -> ContainerConfig:
    """A busybox container running ``sh -c SCRIPT`` (kept after it exits)."""
    return ContainerConfig(image="busybox", command=["sh", "-c", script], **options)


def eventually(check: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
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

"""The ``codex32`` program behaving as Docker's CLI does, with real containers.

Following an ``--rm`` container while its monitor removes it, ``start -a`` on a
restarted container, verbs given several containers of which some fail, ``--json``
on the read commands, and the global ``--cgroup-parent``. Usage errors (no engine
needed) are in tests/unit/test_cli_usage.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import SESSION_TAG, host_tmpdir
from lifecycle_support import (
    CODEX32,
    LOOP,
    Containers,
    cli_env,
    codex32,
    containers,  # noqa: F401 - a pytest fixture, used by name
    eventually,
    sh,
)

from codex32 import Container, ContainerEngine, ContainerNotFoundError, ContainerState
from codex32._store.logs import parse_time

pytestmark = pytest.mark.root

MISSING = "no-such-container-cli"
#: Prints "one", waits for /gate/go (a host file the test makes), prints "two", exits.
GATED = "echo one; while [ ! -e /gate/go ]; do sleep 0.02; done; echo two; exit {code}"


class Following:
    """A ``codex32`` process that keeps running (``logs -f``, ``start -a``): the test
    reads its output as it comes, then collects the rest and its exit code."""

    def __init__(self, storage_dir: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [CODEX32, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(storage_dir),
        )
        self.out = b""

    def wait_for(self, text: bytes, timeout: float = 30) -> None:
        """Read stdout until ``text`` has been printed (the process is following)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while text not in self.out:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} on stdout; got {self.out!r}"
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                assert chunk, f"stdout closed before {text!r}; got {self.out!r}"
                self.out += chunk

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        """(exit code, everything on stdout, stderr) once it has ended by itself."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.out + out).decode(), err.decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


@contextlib.contextmanager
def following(storage_dir: Path, *args: str) -> Iterator[Following]:
    """Run ``codex32 ARGS`` in the background; it is killed if the test fails first."""
    process = Following(storage_dir, *args)
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def gate() -> Iterator[Path]:
    """A host directory mounted at /gate: the test opens the gate by making ``go``."""
    with host_tmpdir() as path:
        yield path


def one_error_line(stderr: str, *needles: str) -> None:
    """Exactly one ``codex32: error:`` line, containing each of ``needles``."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("codex32: error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr


def gone(engine: ContainerEngine, name: str) -> bool:
    try:
        engine.containers.get(name)
    except ContainerNotFoundError:
        return True
    return False


# -- following a container that its monitor removes (--rm) -------------------------------


def test_logs_follow_ends_cleanly_when_an_rm_container_is_removed(
    engine: ContainerEngine, containers: Containers, storage_dir: Path, gate: Path
) -> None:
    name = "cli-follow-rm"
    containers.adopt(name)
    proc = codex32(
        storage_dir, "run", "-d", "--rm", "--network", "none", "--name", name,
        "-v", f"{gate}:/gate", "busybox", "--", "sh", "-c", GATED.format(code=4),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with following(storage_dir, "logs", "-f", name) as logs:
        logs.wait_for(b"one\n")  # following while the container runs
        (gate / "go").touch()
        code, out, err = logs.finish()
    assert (code, out, err) == (0, "one\ntwo\n", "")
    assert eventually(lambda: gone(engine, name), 10)


def test_start_attach_on_an_rm_container_exits_with_its_code(
    engine: ContainerEngine, containers: Containers, storage_dir: Path, gate: Path
) -> None:
    name = "cli-attach-rm"
    containers.adopt(name)
    proc = codex32(
        storage_dir, "create", "--rm", "--network", "none", "--name", name,
        "-v", f"{gate}:/gate", "busybox", "--", "sh", "-c", GATED.format(code=3),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with following(storage_dir, "start", "-a", name) as attached:
        attached.wait_for(b"one\n")
        (gate / "go").touch()
        code, out, err = attached.finish()
    assert (code, out, err) == (3, "one\ntwo\n", "")
    assert eventually(lambda: gone(engine, name), 10)


# -- start -a: this start's output; start: every container ------------------------------


def test_start_attach_follows_only_this_start(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    container = containers.create(sh("echo run; echo oops >&2; exit 5", network="none"))
    for _ in range(3):
        proc = codex32(storage_dir, "start", "-a", container.name)
        assert (proc.returncode, proc.stdout, proc.stderr) == (5, "run\n", "oops\n")
    assert container.logs(stderr=False) == b"run\n" * 3  # the log keeps every run


def test_start_starts_every_container_and_refuses_to_attach_several(
    containers: Containers, storage_dir: Path
) -> None:
    first, second, third = (containers.create(sh(LOOP, network="none")) for _ in range(3))
    proc = codex32(storage_dir, "start", "-a", first.name, second.name)
    assert proc.returncode == 125, proc.stderr
    assert "cannot start and attach multiple containers" in proc.stderr
    for c in (first, second):
        c.reload()
        assert c.state is ContainerState.CREATED

    proc = codex32(storage_dir, "start", first.name, second.name, third.name)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.split() == [first.name, second.name, third.name]
    for c in (first, second, third):
        c.reload()
        assert c.state is ContainerState.RUNNING, c.name


# -- several containers, some failing ----------------------------------------------------


def _running(containers: Containers) -> Container:
    return containers.running(sh(LOOP, network="none"))


def _paused(containers: Containers) -> Container:
    container = _running(containers)
    container.pause()
    return container


def _created(containers: Containers) -> Container:
    return containers.create(sh(LOOP, network="none"))


def _state(engine: ContainerEngine, name: str) -> str:
    try:
        return engine.containers.get(name).status
    except ContainerNotFoundError:
        return "removed"


@pytest.mark.parametrize(
    ("verb", "make", "after"),
    [
        (["stop", "-t", "5"], _running, "exited"),
        (["kill"], _running, "exited"),
        (["pause"], _running, "paused"),
        (["unpause"], _paused, "running"),
        (["restart", "-t", "5"], _running, "running"),
        (["rm", "-f"], _running, "removed"),
        (["start"], _created, "running"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_a_verb_goes_on_past_a_container_that_fails(
    engine: ContainerEngine,
    containers: Containers,
    storage_dir: Path,
    verb: list[str],
    make: Callable[[Containers], Container],
    after: str,
) -> None:
    """As Docker: one error line for the missing one, the others done and printed, 1."""
    first, last = make(containers), make(containers)
    started = last.record.started_at
    proc = codex32(storage_dir, *verb, first.name, MISSING, last.name)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.split() == [first.name, last.name]
    one_error_line(proc.stderr, MISSING, "no such container")
    assert eventually(lambda: _state(engine, first.name) == after, 10)
    assert eventually(lambda: _state(engine, last.name) == after, 10)
    if verb[0] == "restart":  # running before and after: it must have started again
        assert engine.containers.get(last.name).record.started_at != started


def test_wait_prints_each_exit_code_past_a_failure(
    containers: Containers, storage_dir: Path
) -> None:
    first = containers.started(sh("exit 2", network="none"))
    last = containers.started(sh("exit 3", network="none"))
    proc = codex32(storage_dir, "wait", first.name, MISSING, last.name)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.split() == ["2", "3"]
    one_error_line(proc.stderr, MISSING)


def test_kill_goes_on_past_a_container_in_the_wrong_state(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    first, last = _running(containers), _running(containers)
    exited = containers.started(sh("exit 0", network="none"))
    assert exited.wait(timeout=10) == 0
    proc = codex32(storage_dir, "kill", first.name, exited.name, last.name)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.split() == [first.name, last.name]
    one_error_line(proc.stderr, exited.name, "exited")
    assert eventually(lambda: _state(engine, last.name) == "exited", 10)


def test_inspect_prints_the_ones_found(containers: Containers, storage_dir: Path) -> None:
    first, last = _created(containers), _created(containers)
    proc = codex32(storage_dir, "inspect", first.name, MISSING, last.name)
    assert proc.returncode == 1, proc.stderr
    assert [r["State"]["name"] for r in json.loads(proc.stdout)] == [first.name, last.name]
    one_error_line(proc.stderr, MISSING)


# -- --json -------------------------------------------------------------------------------


def test_top_json(containers: Containers, storage_dir: Path) -> None:
    container = _running(containers)
    proc = codex32(storage_dir, "top", "--json", container.name)
    assert (proc.returncode, proc.stderr) == (0, "")
    processes = json.loads(proc.stdout)
    pid1 = next(p for p in processes if p["pid"] == container.record.pid)
    assert str(pid1["command"]).startswith("sh -c trap")
    assert {"pid", "ppid", "user", "rss_bytes", "command"} <= set(pid1)


def test_logs_json_lines(containers: Containers, storage_dir: Path) -> None:
    script = "echo out; echo err >&2; sleep 0.2; echo 'é'"  # é comes last (for -n 1)
    container = containers.started(sh(script, network="none"))
    assert container.wait(timeout=10) == 0
    for extra in ([], ["-f"], ["-t"]):  # -f: the container has exited, it ends at once
        proc = codex32(storage_dir, "logs", "--json", *extra, container.name)
        assert (proc.returncode, proc.stderr) == (0, ""), extra
        entries = [json.loads(line) for line in proc.stdout.splitlines()]
        assert sorted((e["stream"], e["log"]) for e in entries) == [
            ("stderr", "err\n"), ("stdout", "out\n"), ("stdout", "é\n"),
        ]  # fmt: skip
        for entry in entries:
            assert set(entry) == {"time", "stream", "log"}
            assert abs(parse_time(entry["time"]) - time.time()) < 600
    proc = codex32(storage_dir, "logs", "--json", "-n", "1", container.name)
    assert [json.loads(line)["log"] for line in proc.stdout.splitlines()] == ["é\n"]


@pytest.mark.parametrize("verb", ["doctor", "info"])
def test_doctor_json(storage_dir: Path, verb: str) -> None:
    proc = codex32(storage_dir, verb, "--json")
    assert (proc.returncode, proc.stderr) == (0, "")
    report = json.loads(proc.stdout)
    assert report["storage_dir"] == str(storage_dir)
    assert report["cgroup"]["parent"] == os.environ["CODEX32_CGROUP_PARENT"]
    assert report["cgroup"]["layout"] in ("v1", "v2", "hybrid", "none")
    assert report["default_isolation"] in ("minimal", "standard", "strict")


def test_inspect_accepts_json(containers: Containers, storage_dir: Path) -> None:
    container = _created(containers)
    plain = codex32(storage_dir, "inspect", container.name)
    flagged = codex32(storage_dir, "inspect", "--json", container.name)
    assert (flagged.returncode, flagged.stderr) == (0, "")
    assert json.loads(flagged.stdout) == json.loads(plain.stdout)


# -- --cgroup-parent ---------------------------------------------------------------------


def test_the_global_cgroup_parent_option_places_containers(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    """As CODEX32_CGROUP_PARENT does (which the CLI's environment also sets: the option wins)."""
    if engine._cgroups.driver() is None:
        pytest.skip(f"no cgroup driver here: {engine._cgroups.unavailable}")
    parent = f"{SESSION_TAG}-cli-option"
    name = "cli-cgroup-parent"
    containers.adopt(name)
    proc = codex32(storage_dir, "--cgroup-parent", parent, "doctor", "--json")
    assert json.loads(proc.stdout)["cgroup"]["parent"] == parent
    proc = codex32(
        storage_dir, "--cgroup-parent", parent, "run", "-d", "--network", "none",
        "--name", name, "busybox", "--", "sleep", "30",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    container = engine.containers.get(name)
    paths = set(container.record.cgroup_paths.values())
    parents = {os.path.dirname(p) for p in paths}
    try:
        assert paths, container.record
        for path in paths:
            assert path.endswith(f"/{parent}/{container.id}"), path
            with open(os.path.join(path, "cgroup.procs")) as f:
                assert str(container.record.pid) in f.read().split()
        proc = codex32(storage_dir, "rm", "-f", name)
        assert proc.returncode == 0, proc.stderr
        assert not any(os.path.exists(p) for p in paths)
    finally:
        containers.cleanup()
        for directory in parents:  # the parent stays by design, as Docker's does
            with contextlib.suppress(OSError):  # if not empty, the leak check says so
                os.rmdir(directory)

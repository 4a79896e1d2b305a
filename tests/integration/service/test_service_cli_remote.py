"""``codex32 --host unix://...``: every verb through the service, same output and exit codes.

Each verb's happy path runs through the service; where the output does not depend on
when it runs, the same command in-process must print exactly the same.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.service_support import Service, wait_for

pytestmark = pytest.mark.root

CODEX32 = str(Path(sys.executable).with_name("codex32"))


def _run(
    service: Service, *args: str, remote: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEX32_STORAGE_DIR=str(service.storage_dir))
    env.pop("CODEX32_HOST", None)
    host = ["--host", f"unix://{service.socket}"] if remote else []
    return subprocess.run(
        [CODEX32, *host, *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=120,
        check=False,
    )


def _same(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """Run in-process and through the service: the same output, the same exit code."""
    local = _run(service, *args, remote=False)
    remote = _run(service, *args)
    assert (remote.returncode, remote.stdout, remote.stderr) == (
        local.returncode,
        local.stdout,
        local.stderr,
    ), args
    return remote


def test_run_attached_rm_and_exit_code(service: Service) -> None:
    result = _run(
        service,
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    )
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert _run(service, "ps", "-a", "-q").stdout == ""  # --rm honoured


def test_lifecycle_verbs_through_the_service(service: Service, tmp_path: Path) -> None:
    started = _run(
        service,
        "run",
        "-d",
        "--name",
        "rm-life",
        "--network",
        "none",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo hi; trap 'exit 5' TERM; while :; do sleep 0.1; done",
    )
    assert started.returncode == 0 and len(started.stdout.strip()) == 64
    try:
        assert _run(service, "ps", "-q").stdout.strip() == started.stdout.strip()[:12]
        assert wait_for(lambda: _run(service, "logs", "rm-life").stdout == "hi\n")
        _same(service, "logs", "rm-life")
        _same(service, "inspect", "rm-life")
        exec_result = _run(service, "exec", "rm-life", "--", "sh", "-c", "echo in; exit 4")
        assert (exec_result.returncode, exec_result.stdout) == (4, "in\n")
        piped = _run(service, "exec", "-i", "rm-life", "--", "tr", "a-z", "A-Z", stdin="abc\n")
        assert (piped.returncode, piped.stdout) == (0, "ABC\n")
        top = _run(service, "top", "rm-life", "--json")
        assert any("sleep" in p["command"] or "sh" in p["command"] for p in json.loads(top.stdout))
        stats = json.loads(_run(service, "stats", "--no-stream", "--json", "rm-life").stdout)
        assert stats[0]["name"] == "rm-life" and stats[0]["pids"] >= 1
        for verb in ("pause", "unpause"):
            assert _run(service, verb, "rm-life").stdout == "rm-life\n"
        assert _run(service, "stop", "-t", "5", "rm-life").stdout == "rm-life\n"
        assert _run(service, "wait", "rm-life").stdout == "5\n"
        assert _run(service, "restart", "rm-life").stdout == "rm-life\n"
        assert _run(service, "kill", "-s", "KILL", "rm-life").stdout == "rm-life\n"
        assert _run(service, "wait", "rm-life").stdout == "137\n"
        tar = tmp_path / "fs.tar"
        assert _run(service, "export", "rm-life", "-o", str(tar)).returncode == 0
        with tarfile.open(tar) as archive:
            assert "bin/busybox" in archive.getnames()
        state = tmp_path / "state.json"
        assert _run(service, "export", "--state", "rm-life", "-o", str(state)).returncode == 0
        assert json.loads(state.read_text())["State"]["exit_code"] == 137
        _same(service, "ps", "-a", "--json")
    finally:
        assert _run(service, "rm", "-f", "rm-life").stdout == "rm-life\n"


def test_create_start_attach_prune(service: Service) -> None:
    created = _run(
        service,
        "create",
        "--name",
        "rm-created",
        "--network",
        "none",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo attached; exit 2",
    )
    assert created.returncode == 0
    attached = _run(service, "start", "-a", "rm-created")
    assert (attached.returncode, attached.stdout) == (2, "attached\n")
    pruned = _run(service, "prune")
    assert pruned.stdout.strip() == created.stdout.strip()


def test_errors_are_the_same_line_and_code(service: Service) -> None:
    missing = _same(service, "rm", "no-such-container")
    assert missing.returncode == 125 and missing.stderr.count("\n") == 1
    assert _same(service, "logs", "no-such").returncode == 125
    not_found = _run(service, "run", "--rm", "--network", "none", "busybox", "--", "nope-cmd")
    assert not_found.returncode == 127 and "nope-cmd" in not_found.stderr
    refused = _run(
        service,
        "run",
        "--rm",
        "--isolation",
        "minimal",
        "--network",
        "none",
        "busybox",
        "--",
        "true",
    )
    assert refused.returncode == 125 and "min_isolation" in refused.stderr
    interactive = _run(service, "run", "-i", "--rm", "--network", "none", "busybox", "--", "cat")
    assert interactive.returncode == 125 and "--host" in interactive.stderr


def test_read_only_verbs_print_the_same(service: Service) -> None:
    _same(service, "images")
    _same(service, "images", "--json")
    _same(service, "network", "ls")
    _same(service, "network", "inspect", "bridge")
    # The service's engine keeps a sandbox pool, an engine of one CLI call does not:
    # their reports differ there only.
    local = json.loads(_run(service, "doctor", "--json", remote=False).stdout)
    remote = json.loads(_run(service, "doctor", "--json").stdout)
    assert (local.pop("sandbox_pool")["size"], remote.pop("sandbox_pool")["size"]) == (0, 2)
    assert remote == local
    _same(service, "events", "--since", "1h", "--until", "1s", "--json")
    _same(service, "plan", "--network", "none", "busybox", "--", "true")


def test_build_and_networks_through_the_service(service: Service) -> None:
    built = _run(service, "build", "busybox")
    assert built.returncode == 0 and "building template busybox" in built.stderr
    created = _run(service, "network", "create", "rm-net", "--subnet", "10.232.0.0/24")
    assert (created.returncode, created.stdout) == (0, "rm-net\n")
    assert "rm-net" in _run(service, "network", "ls", "-q").stdout.split()
    assert _run(service, "network", "rm", "rm-net").stdout == "rm-net\n"


def test_without_a_service_the_host_mode_says_so(tmp_path: Path, service: Service) -> None:
    env = dict(os.environ, CODEX32_HOST=f"unix://{tmp_path}/none.sock")
    result = subprocess.run(
        [CODEX32, "ps"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 125 and result.stderr.count("\n") == 1
    assert "cannot reach the service" in result.stderr


def _read_pty(fd: int, done: Callable[[bytes], bool], timeout: float) -> bytes:
    output = b""
    deadline = time.monotonic() + timeout
    while not done(output) and (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], remaining)
        try:
            chunk = os.read(fd, 4096) if ready else b""
        except OSError:  # EIO: the CLI closed the terminal
            chunk = b""
        if not chunk:
            break
        output += chunk
    return output


def test_exec_it_through_the_service_gives_a_terminal(service: Service) -> None:
    started = _run(
        service, "run", "-d", "--name", "rm-exec-it", "--network", "none", "busybox", "sleep", "120"
    )
    assert started.returncode == 0, started.stderr
    env = dict(os.environ, CODEX32_STORAGE_DIR=str(service.storage_dir), TERM="dumb")
    argv = [CODEX32, "--host", f"unix://{service.socket}", "exec", "-it", "rm-exec-it", "sh"]
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execve(CODEX32, argv, env)
        finally:
            os._exit(127)
    try:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
        assert b"# " in _read_pty(master, lambda out: b"# " in out, 30)
        os.write(master, b"tty; stty size; exit 6\r")
        output = _read_pty(master, lambda out: False, 30)
        _, status = os.waitpid(pid, 0)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)
        _run(service, "rm", "-f", "rm-exec-it")
    lines = [line.strip() for line in output.replace(b"\r", b"").split(b"\n")]
    assert os.waitstatus_to_exitcode(status) == 6, output
    assert any(re.fullmatch(rb"/dev/pts/\d+", line) for line in lines), output
    assert b"33 111" in lines, output  # the caller's window size


#: Loaded by typer (click, rich, pydantic), httpx or the engine: none of it is needed to
#: run a container through the service.
HEAVY = ("pydantic", "pydantic_core", "typer", "click", "rich", "httpx", "httpcore", "anyio",
         "pyroute2", "psutil", "codex32._engine", "codex32._network", "codex32._cgroups",
         "codex32._plan", "codex32._runtime", "codex32.config", "codex32.settings")  # fmt: skip


def test_run_through_the_service_imports_only_what_it_needs(service: Service) -> None:
    """The thin client path: the same output and exit code, none of the heavy modules."""
    argv = ["--host", f"unix://{service.socket}", "run", "--rm", "--network", "none",
            "busybox", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]  # fmt: skip
    code = (
        "import atexit, sys\n"
        f"heavy = {HEAVY!r}\n"
        "atexit.register(lambda: sys.stderr.write('loaded: ' + ','.join(sorted(m for m in "
        "sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))) + '\\n'))\n"
        f"sys.argv = ['codex32', *{argv!r}]\n"
        "from codex32.cli.entry import main\n"
        "main()\n"
    )
    env = dict(os.environ, CODEX32_STORAGE_DIR=str(service.storage_dir))
    env.pop("CODEX32_HOST", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120,
        check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout) == (3, "out\n"), result.stderr
    assert result.stderr == "err\nloaded: \n"
    assert _run(service, "ps", "-a", "-q").stdout == ""  # --rm honoured
    detached = _run(service, "run", "-d", "--rm", "--network", "none", "busybox", "true")
    assert detached.returncode == 0 and len(detached.stdout.strip()) == 64
    assert wait_for(lambda: _run(service, "ps", "-a", "-q").stdout == "")

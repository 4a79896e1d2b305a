"""The ``codex32`` command line, run as a real program against the session's storage.

Output goes straight from the container to the CLI's own stdout/stderr; errors are
one line on stderr, no traceback, and Docker's exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_nothing_new, facts, host_tmpdir, snapshot

from codex32 import ContainerEngine
from codex32.settings import Settings

pytestmark = pytest.mark.root

CODEX32 = str(Path(sys.executable).with_name("codex32"))
_OUR_VARIABLES = (
    "CODEX32_STORAGE_DIR",
    "CONTAINER_STORAGE_DIR",
    "CODEX32_ISOLATION_LEVEL",
    "CONTAINER_ISOLATION_LEVEL",
)


@pytest.fixture(scope="module", autouse=True)
def _templates_built(engine: ContainerEngine) -> None:
    """Build the templates first, so that no test sees the build's progress on stderr."""
    for name in ("busybox", "python"):
        if not engine.images.get(name).built:
            engine.images.build(name, quiet=True)


def _env(storage_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OUR_VARIABLES}
    env["CODEX32_STORAGE_DIR"] = str(storage_dir)
    env.update(extra)
    return env


def codex32(
    storage_dir: Path,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CODEX32, *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env or _env(storage_dir),
        timeout=120,
        check=False,
    )


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("codex32: error: "), proc.stderr
    return lines[0]


def test_run_echo(storage_dir: Path) -> None:
    proc = codex32(storage_dir, "run", "--rm", "busybox", "--", "echo", "hello")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "hello\n", "")


def test_run_strict_id(storage_dir: Path) -> None:
    proc = codex32(storage_dir, "run", "--rm", "--isolation", "strict", "busybox", "--", "id")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("uid=0(root) gid=0(root)")


def test_run_strict_is_really_user_namespaced(storage_dir: Path) -> None:
    settings = Settings.from_env(storage_dir)
    proc = codex32(
        storage_dir, "run", "--rm", "--isolation", "STRICT", "busybox", "--", "cat",
        "/proc/self/uid_map",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", str(settings.userns_uid_base), str(settings.userns_size)]


@pytest.mark.parametrize("code", [0, 1, 7])
def test_exit_code_propagates(storage_dir: Path, code: int) -> None:
    proc = codex32(storage_dir, "run", "--rm", "busybox", "--", "sh", "-c", f"exit {code}")
    assert proc.returncode == code
    assert proc.stderr == ""


@pytest.mark.parametrize(
    ("args", "exit_code", "needle"),
    [
        (["busybox", "--", "no-such-command"], 127, "no-such-command"),
        (["busybox", "--", "/etc/passwd"], 126, "/etc/passwd"),
        (["-u", "nosuchuser", "busybox", "--", "true"], 125, "nosuchuser"),
        (["no-such-template", "--", "true"], 125, "no-such-template"),
        (["--isolation", "paranoid", "busybox", "--", "true"], 125, "paranoid"),
        (["--name", "bad name", "busybox", "--", "true"], 125, "name"),
        (["-v", "relative:/data", "busybox", "--", "true"], 125, "relative"),
        (["-v", "/no/such/dir:/data", "busybox", "--", "true"], 125, "/no/such/dir"),
        (["--cap-add", "CAP_FLY", "busybox", "--", "true"], 125, "CAP_FLY"),
        (["--ulimit", "nofile=lots", "busybox", "--", "true"], 125, "lots"),
        (["-w", "relative", "busybox", "--", "true"], 125, "relative"),
        (["--device-write-bps", "/dev/null:1mb", "busybox", "--", "true"], 125, "block device"),
        (["--device-read-bps", "/dev/sda:fast", "busybox", "--", "true"], 125, "'fast'"),
        (["--device-read-iops", "/dev/sda:1.5", "busybox", "--", "true"], 125, "whole number"),
        (["--device-write-iops", "/dev/sda", "busybox", "--", "true"], 125, "PATH:N"),
    ],
)
def test_errors_are_one_line_with_dockers_exit_code(
    storage_dir: Path, args: list[str], exit_code: int, needle: str
) -> None:
    before = snapshot(storage_dir)
    proc = codex32(storage_dir, "run", "--rm", *args)
    assert proc.returncode == exit_code, proc.stderr
    assert needle in _one_line_error(proc)
    assert proc.stdout == ""
    assert_nothing_new(before, storage_dir)


def test_run_options_reach_the_container(storage_dir: Path) -> None:
    with host_tmpdir() as data:
        (data / "in").write_text("from the host\n")
        script = (
            'echo "a=$A"; echo "b=$B"; echo "host=$(hostname)"; echo "cwd=$(pwd)"; '
            'echo "uid=$(id -u)"; echo "nofile=$(ulimit -n)"; echo "data=$(cat /data/in)"; '
            'echo "ro=$(touch /data/x 2>&1)"; echo "pid1=$(head -c 9 /proc/1/cmdline)"; '
            'echo "root=$(touch /x 2>&1)"; echo "scratch=$(touch /scratch/f && echo ok)"'
        )
        proc = codex32(
            storage_dir, "run", "--rm", "-e", "A=1", "--env", "B=two words", "-w", "/srv/w",
            "-h", "clihost", "-u", "bot", "--ulimit", "nofile=50:60", "-v", f"{data}:/data:ro",
            "--read-only", "--tmpfs", "/scratch", "--init", "busybox", "--", "sh", "-c", script,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert os.listdir(data) == ["in"]
    found = facts(proc.stdout)
    assert found["a"] == "1"
    assert found["b"] == "two words"
    assert found["host"] == "clihost"
    assert found["cwd"] == "/srv/w"
    assert found["uid"] == "1000"
    assert found["nofile"] == "50"
    assert found["data"] == "from the host"
    assert "Read-only file system" in found["ro"]
    assert found["pid1"] == "/dev/init"
    assert "Read-only file system" in found["root"]
    assert found["scratch"] == "ok"


def test_stdout_and_stderr_are_the_containers(storage_dir: Path) -> None:
    proc = codex32(
        storage_dir, "run", "--rm", "busybox", "--", "sh", "-c", "echo out; echo err >&2"
    )
    assert (proc.stdout, proc.stderr) == ("out\n", "err\n")


def test_interactive_passes_stdin(storage_dir: Path) -> None:
    proc = codex32(storage_dir, "run", "--rm", "-i", "busybox", "--", "cat", stdin="piped\n")
    assert (proc.returncode, proc.stdout) == (0, "piped\n")


def test_plan_prints_the_steps_and_creates_nothing(storage_dir: Path) -> None:
    before = snapshot(storage_dir)
    proc = codex32(storage_dir, "plan", "busybox", "--", "true")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    ops = [step["op"] for step in plan["steps"]]
    for op in ("overlay", "proc", "dev", "pivot_root", "capabilities", "seccomp", "exec"):
        assert op in ops, op
    assert ops.index("overlay") < ops.index("pivot_root") < ops.index("capabilities")
    assert ops.index("capabilities") < ops.index("seccomp") < ops.index("exec")
    assert ops[-1] == "exec"
    assert plan["steps"][-1]["args"] == ["true"]
    assert {"pid", "mount", "uts", "ipc", "net"} <= set(plan["namespaces"])
    assert_nothing_new(before, storage_dir)


def test_plan_strict_has_a_user_namespace_and_id_maps(storage_dir: Path) -> None:
    proc = codex32(storage_dir, "plan", "--isolation", "strict", "busybox", "--", "id")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert "user" in plan["namespaces"]
    assert plan["uid_mappings"][0]["containerID"] == 0
    assert plan["uid_mappings"][0]["hostID"] > 0
    assert "remount_root" in [step["op"] for step in plan["steps"]]


def test_original_environment_variable_names(storage_dir: Path) -> None:
    env = _env(storage_dir)
    del env["CODEX32_STORAGE_DIR"]
    env["CONTAINER_STORAGE_DIR"] = str(storage_dir)
    env["CONTAINER_ISOLATION_LEVEL"] = "strict"
    proc = codex32(storage_dir, "plan", "busybox", "--", "true", env=env)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert "user" in plan["namespaces"]
    overlay = next(step for step in plan["steps"] if step["op"] == "overlay")
    assert overlay["upper"].startswith(str(storage_dir) + "/")


def test_images_lists_the_templates(storage_dir: Path) -> None:
    proc = codex32(storage_dir, "images")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert {"busybox", "python"} <= set(names)
    proc = codex32(storage_dir, "images", "--json")
    assert proc.returncode == 0, proc.stderr
    listed = {image["name"]: image for image in json.loads(proc.stdout)}
    assert {"busybox", "python"} <= set(listed)
    assert listed["busybox"]["command"] == ["sh"]


def test_python_bot_through_the_cli(storage_dir: Path) -> None:
    proc = codex32(
        storage_dir, "run", "--rm", "--isolation", "strict", "python", "--", "python3", "-c",
        "import sys, os; print(sys.version_info[0], os.getcwd(), os.getuid())",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["3", "/home/bot", "0"]


def test_version_prints_the_installed_version(storage_dir: Path) -> None:
    from importlib.metadata import version

    proc = codex32(storage_dir, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"codex32 {version('codex32')}"

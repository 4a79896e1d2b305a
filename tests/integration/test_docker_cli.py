"""The docker CLI (a real one: Debian's docker.io, and any other on PATH) against
Codex-32's Docker socket, with ``DOCKER_HOST=unix://<the tests' socket>``.

Every command the issue lists, asserting output and exit codes; the commands that
carry the wire's hard parts (run, run -it, exec, exec -it) run with each CLI found.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_server import (
    DockerSocket,
    cli_version,
    docker_binaries,
    docker_socket,
    run_in_terminal,
    wait_until,
)
from service.service_support import Service

pytestmark = pytest.mark.root

_ = docker_socket  # the fixture, imported for this module

CLIS = docker_binaries()
if not CLIS:  # setup.sh installs docker.io: a missing CLI is a set-up failure
    pytest.fail("no docker CLI: run ./setup.sh (it installs Debian's docker.io)", pytrace=False)


class Docker:
    """Runs one docker CLI against the tests' socket."""

    def __init__(self, binary: str, socket: DockerSocket) -> None:
        self.binary = binary
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "DOCKER_HOST": socket.url,
            "DOCKER_CONFIG": str(socket.path.parent / "docker-config"),
            "TERM": "xterm",
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def names(self) -> list[str]:
        out = self("ps", "-a", "--format", "{{.Names}}").stdout
        return [line for line in out.splitlines() if line]


def _cli_id(binary: str) -> str:
    words = cli_version(binary).replace(",", "").split()  # "Docker version 28.2.2, build x"
    return f"docker-{words[2]}" if len(words) > 2 else binary


@pytest.fixture(params=CLIS, ids=[_cli_id(c) for c in CLIS])
def any_docker(request: pytest.FixtureRequest, docker_socket: DockerSocket) -> Iterator[Docker]:
    """Each docker CLI on this machine (PATH's and Debian's /usr/bin/docker)."""
    cli = Docker(request.param, docker_socket)
    yield cli
    _remove_all(cli)


@pytest.fixture
def docker(docker_socket: DockerSocket) -> Iterator[Docker]:
    """The docker CLI on PATH (Debian's when it is the only one)."""
    cli = Docker(CLIS[0], docker_socket)
    yield cli
    _remove_all(cli)


def _remove_all(cli: Docker) -> None:
    left = cli.names()
    if left:
        cli("rm", "-f", *left, check=False)


def test_version_and_info(any_docker: Docker) -> None:
    out = any_docker("version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}").stdout
    assert out.split() == ["1.43", "linux"], cli_version(any_docker.binary)
    info = json.loads(any_docker("info", "--format", "{{json .}}").stdout)
    assert info["OSType"] == "linux" and info["ServerVersion"].endswith("codex32")


def test_run_rm_prints_and_passes_the_exit_code(any_docker: Docker) -> None:
    result = any_docker("run", "--rm", "busybox", "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n")
    failed = any_docker(
        "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert any_docker.names() == []  # --rm: the server removed them, no DELETE was sent


def test_run_with_piped_stdin(docker: Docker) -> None:
    result = docker(
        "run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z; echo end", stdin="typed text\n"
    )
    assert result.stdout == "TYPED TEXT\nend\n"


def test_run_it_through_a_terminal(any_docker: Docker) -> None:
    run = run_in_terminal(
        [any_docker.binary, "run", "-it", "--rm", "busybox", "sh"],
        any_docker.env,
        [b"echo typed-$((6*7))\r", b"stty size; tty; exit 5\r"],
    )
    text = run.output.decode(errors="replace")
    assert "typed-42" in text, text
    assert "/dev/pts/" in text, text
    assert "31 101" in text, text  # the CLI's terminal size, sent by resize
    assert run.exit_code == 5
    assert any_docker.names() == []


def test_run_d_ps_logs_follow(docker: Docker) -> None:
    cid = docker(
        "run",
        "-d",
        "--name",
        "cli-ticker",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo tick $i; sleep 0.3; done",
    ).stdout.strip()
    assert len(cid) == 64
    ps = docker("ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Image}}").stdout
    assert f"{cid[:12]} cli-ticker busybox:latest" in ps
    follow = docker("logs", "-f", "cli-ticker", timeout=30)  # ends when the container does
    assert follow.stdout == "tick 1\ntick 2\ntick 3\n"
    status = docker("ps", "-a", "--filter", "name=cli-ticker", "--format", "{{.Status}}").stdout
    assert status.startswith("Exited (0)")
    assert docker("logs", "cli-ticker").stdout == "tick 1\ntick 2\ntick 3\n"  # after the exit
    assert docker("logs", "-f", "cli-ticker", timeout=10).stdout.count("tick") == 3


def test_exec_and_exit_codes(any_docker: Docker) -> None:
    any_docker("run", "-d", "--name", "cli-exec", "busybox", "sleep", "60")
    assert any_docker("exec", "cli-exec", "echo", "hi").stdout == "hi\n"
    failed = any_docker("exec", "cli-exec", "sh", "-c", "echo e >&2; exit 7", check=False)
    assert (failed.returncode, failed.stderr) == (7, "e\n")
    piped = any_docker("exec", "-i", "cli-exec", "cat", stdin="through stdin\n")
    assert piped.stdout == "through stdin\n"


def test_exec_it_through_a_terminal(any_docker: Docker) -> None:
    any_docker("run", "-d", "--name", "cli-exec-it", "busybox", "sleep", "60")
    run = run_in_terminal(
        [any_docker.binary, "exec", "-it", "cli-exec-it", "sh"],
        any_docker.env,
        [b"echo in-$((2+3))\r", b"stty size; exit 4\r"],
    )
    text = run.output.decode(errors="replace")
    assert "in-5" in text, text
    assert "31 101" in text, text  # stty size: the exec's terminal was sized
    assert run.exit_code == 4


def test_stop_kill_rm_f(docker: Docker) -> None:
    docker("run", "-d", "--name", "cli-stop", "busybox", "sleep", "60")
    docker("run", "-d", "--name", "cli-kill", "busybox", "sleep", "60")
    docker("run", "-d", "--name", "cli-rm", "busybox", "sleep", "60")
    assert docker("stop", "-t", "1", "cli-stop").stdout.strip() == "cli-stop"
    assert docker("kill", "cli-kill").stdout.strip() == "cli-kill"

    def states() -> list[str]:
        return docker("ps", "-a", "--format", "{{.Names}} {{.State}}").stdout.split("\n")

    assert "cli-stop exited" in states()  # stop returns once it has stopped
    wait_until(lambda: "cli-kill exited" in states(), what="the killed container's exit")
    assert "cli-rm running" in states()
    assert docker("rm", "-f", "cli-rm", "cli-stop", "cli-kill").returncode == 0
    assert docker.names() == []
    gone = docker("kill", "cli-rm", check=False)
    assert gone.returncode != 0 and "No such container" in gone.stderr


def test_inspect(docker: Docker) -> None:
    docker(
        "run",
        "-d",
        "--name",
        "cli-inspect",
        "--label",
        "team=bots",
        "-e",
        "A=1",
        "busybox",
        "sleep",
        "30",
    )
    (data,) = json.loads(docker("inspect", "cli-inspect").stdout)
    assert data["Name"] == "/cli-inspect" and data["State"]["Running"] is True
    assert data["Config"]["Labels"] == {"team": "bots"} and "A=1" in data["Config"]["Env"]
    assert data["HostConfig"]["LogConfig"]["Type"] == "json-file"
    status = docker("inspect", "-f", "{{.State.Status}} {{.Config.Image}}", "cli-inspect")
    assert status.stdout.strip() == "running busybox:latest"


def test_events_since(docker: Docker) -> None:
    since = str(int(time.time()) - 1)
    docker("run", "--rm", "--name", "cli-events", "busybox", "true")
    until = str(int(time.time()) + 1)
    out = docker(
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        "container=cli-events",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ).stdout
    lines = out.splitlines()
    for action in ("create", "start", "die", "destroy"):
        assert f"container {action} cli-events" in lines, out


def test_images_and_network_ls(docker: Docker) -> None:
    images = docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "busybox:latest" in images
    networks = docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.splitlines()
    assert "host host" in networks and "none null" in networks


def test_policy_refusals_are_docker_errors(any_docker: Docker) -> None:
    for args, words in (
        (["--privileged"], "denied by policy rule allow_privileged"),
        (["-v", "/etc:/host-etc"], "denied by policy rule volume_roots"),
        (["--cap-add", "NET_ADMIN"], "denied by policy rule allowed_capabilities"),
        (["--network", "host"], "denied by policy rule allow_host_network"),
        (["--dns", "1.1.1.1"], "HostConfig.Dns is not supported by Codex-32"),
    ):
        result = any_docker("run", "--rm", *args, "busybox", "true", check=False)
        assert result.returncode == 125, (args, result.stderr)
        assert f"Error response from daemon: {words}" in result.stderr, result.stderr
    assert any_docker.names() == []


def test_unknown_image_and_command(docker: Docker) -> None:
    image = docker("run", "--rm", "no-such-image", "true", check=False)
    assert image.returncode == 125 and "No such image" in image.stderr
    command = docker("run", "--rm", "busybox", "no-such-command", check=False)
    assert command.returncode == 127 and "executable file not found" in command.stderr
    wait_until(lambda: docker.names() == [], what="the failed --rm container to go")


def test_api_version_too_new_is_refused(docker: Docker, docker_socket: DockerSocket) -> None:
    env = dict(docker.env, DOCKER_API_VERSION="1.99")
    result = subprocess.run(
        [docker.binary, "version"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode != 0
    assert "1.99 is too new" in result.stderr or "Maximum supported API version" in (result.stderr)


def test_codex32_serve_answers_on_its_docker_socket(
    storage_dir: Path, docker_socket: DockerSocket
) -> None:
    """The issue's "done when": `codex32 serve` (``python -m codex32.service``) starts the
    Docker socket beside the native one, and `docker run --rm busybox echo hello` prints
    hello through it; the socket goes when the service stops."""
    workdir = docker_socket.path.parent / "serve"
    workdir.mkdir()
    path = workdir / "docker.sock"
    service = Service(
        storage_dir, workdir, extra_args=["--docker-socket", str(path), "--group", ""]
    ).start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        cli = Docker(CLIS[0], docker_socket)
        cli.env["DOCKER_HOST"] = f"unix://{path}"
        result = cli("run", "--rm", "busybox", "echo", "hello")
        assert (result.returncode, result.stdout) == (0, "hello\n")
        assert cli.names() == []
    finally:
        # uvicorn re-raises the stop signal once shut down: killed by SIGTERM is a clean stop
        assert service.stop() in (0, -signal.SIGTERM), service.log()
    assert not path.exists()
    assert "Docker API on unix://" in service.log()

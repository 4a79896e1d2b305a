"""Hostile command lines: each refused with one clear line, exit 125, no traceback,
nothing created (no container directory, no name).

Names, hostnames, env, volume specs, tmpfs options, ulimits, device paths, signals,
sizes, users, ports, restart policies, filters: NUL (through --env-file), newlines,
``../``, very long values, shell metacharacters, undecodable bytes, negative and
overflowing numbers. ``cli_batch.py`` runs them all, each in a process of its own;
a few go through the real ``codex32`` executable too (argv bytes as the shell gives).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import host_tmpdir

pytestmark = pytest.mark.root

HERE = Path(__file__).parent
LONG = "x" * 5000
UNDECODABLE = b"n\xff\xfe".decode("utf-8", "surrogateescape")


def _run(*options: str, image: str = "busybox") -> list[str]:
    return ["run", "--rm", "--network", "none", *options, image, "true"]


#: (id, argv, xfail reason or None). Every one must be refused.
CASES: list[tuple[str, list[str], str | None]] = [
    # names
    *[
        (f"name-{i}", _run("--name", v), None)
        for i, v in enumerate(
            [
                "",
                "a/b",
                "../x",
                "..",
                ".",
                "a b",
                "a\nb",
                "a;rm -rf /",
                "$(id)",
                "`id`",
                LONG,
                UNDECODABLE,
                "a\tb",
                "名前",
                "a:b",
                "/abs",
                "-",
                "a\rb",
                "a*b",
                "a?b",
            ]
        )
    ],
    # hostnames
    *[
        (f"hostname-{i}", _run("--hostname", v), None)
        for i, v in enumerate(
            [
                "a\nb",
                "-bad",
                LONG,
                "a b",
                "../h",
                "a;b",
                UNDECODABLE,
                "a/b",
                "a..b",
                "",
            ]
        )
    ],
    # environment
    ("env-empty-key", _run("-e", "=v"), None),
    ("env-newline-key", _run("-e", "A\nB=1"), None),
    ("env-undecodable-key", _run("-e", f"{UNDECODABLE}=1"), None),
    # volumes
    *[
        (f"volume-{i}", _run("-v", v), reason)
        for i, (v, reason) in enumerate(
            [
                ("", None),
                (":", None),
                ("relative:/x", None),
                ("/tmp:relative", None),
                ("/nonexistent-codex32-xyz:/x", None),
                ("/tmp:/x:rw,bogus", None),
                ("/tmp:/x:ro:extra", None),
                ("/tmp:/x\nb", None),
                ("/tmp:/", None),
                ("/tmp:/proc", None),
                ("/tmp:/proc/sys/kernel", None),
                ("/t\nmp:/x", None),
                ("/tmp:/" + "x/" * 3000, None),
                ("/tmp:/x:bogus", None),
                (f"/tmp:/{UNDECODABLE}/../..", None),
                ("/tmp:/x/../../etc", None),
            ]
        )
    ],
    # tmpfs
    *[
        (f"tmpfs-{i}", _run("--tmpfs", v), reason)
        for i, (v, reason) in enumerate(
            [
                ("relative", None),
                ("/t:size=-1", None),
                ("/t:size=abc", None),
                ("/t:mode=99999", None),
                ("/t:mode=abc", None),
                ("/t:bogus=1", None),
                ("/t:size=99999999999999999999999", None),
                ("/", None),
                ("/proc", None),
                ("/t:size=1m\nx", None),
                ("/t:exec;rm", None),
                ("", None),
                ("/t:uid=-1", None),
            ]
        )
    ],
    # ulimits
    *[
        (f"ulimit-{i}", _run("--ulimit", v), None)
        for i, v in enumerate(
            [
                "nofile",
                "nofile=",
                "nofile=-2",
                "nofile=abc",
                "bogus=1",
                "nofile=10:5",
                "nofile=99999999999999999999999",
                "nproc=1:2:3",
                "=1",
                "nofile=1\n2",
            ]
        )
    ],
    # device paths (I/O limits)
    *[
        (f"device-{i}", _run("--device-read-bps", v), None)
        for i, v in enumerate(
            [
                "/dev/null:1mb",
                "relative:1mb",
                "/dev/../etc/passwd:1mb",
                "/nonexistent-dev:1mb",
                "/dev/loop0:-1",
                "/dev/loop0:abc",
                ":1mb",
                "/dev/zero:99999999999999999999999",
            ]
        )
    ],
    # signals
    *[
        (f"signal-{i}", _run("--stop-signal", v), None)
        for i, v in enumerate(
            [
                "SIGBOGUS",
                "0",
                "-1",
                "99",
                "99999999999999999999",
                "SIG",
                "KILL;id",
                "SIG\nKILL",
            ]
        )
    ],
    # sizes and numbers
    *[
        (f"size-{i}", _run(option, v), None)
        for i, (option, v) in enumerate(
            [
                ("-m", "-1"),
                ("-m", "abc"),
                ("-m", "1zb"),
                ("-m", "99999999999999999999999g"),
                ("--memory-swap", "-2"),
                ("--cpus", "-1"),
                ("--cpus", "nan"),
                ("--cpus", "inf"),
                ("--cpus", "1e309"),
                ("--cpu-shares", "-5"),
                ("--cpu-shares", str(2**64)),
                ("--pids-limit", str(2**64)),
                ("--blkio-weight", "5"),
                ("--blkio-weight", "99999"),
                ("--log-max-size", "-2"),  # (-1: never rotate)
                ("--log-max-size", "abc"),
                ("--log-max-files", "0"),
                ("--log-max-files", "-1"),
                ("--stop-timeout", str(2**64)),
                ("--cpuset-cpus", "abc"),
                ("--cpuset-cpus", "0-"),
                ("--cpuset-cpus", "999999"),
                ("--network-egress-rate", "-1"),
                ("--network-egress-rate", "abc"),
                ("--memory-reservation", "-5"),
            ]
        )
    ],
    # users and workdirs
    ("user-uint32-max", _run("-u", "4294967295"), None),
    ("user-overflow", _run("-u", "4294967296"), None),
    ("user-negative", _run("-u", "-1"), None),
    ("user-three-parts", _run("-u", "a:b:c"), None),
    ("user-shell", _run("-u", "$(id)"), None),
    ("workdir-relative", _run("-w", "relative"), None),
    # isolation, restart, capabilities, ports, networks, images
    ("isolation-bogus", _run("--isolation", "bogus"), None),
    ("restart-bogus", _run("--restart", "sometimes"), None),
    ("restart-negative", _run("--restart", "on-failure:-1"), None),
    ("restart-abc", _run("--restart", "on-failure:abc"), None),
    ("restart-count-always", _run("--restart", "always:3"), None),
    ("cap-add-bogus", _run("--cap-add", "CAP_BOGUS"), None),
    ("cap-drop-bogus", _run("--cap-drop", "bogus;id"), None),
    ("publish-port-overflow", _run("-p", "99999:80"), None),
    ("publish-port-zero", _run("-p", "80:0"), None),
    ("publish-negative", _run("-p", "-1:80"), None),
    ("publish-words", _run("-p", "abc"), None),
    ("publish-bad-ip", _run("-p", "1.2.3.999:80:80"), None),
    ("publish-proto", _run("-p", "80:80/sctp"), None),
    ("network-traversal", ["run", "--rm", "--network", "../x", "busybox", "true"], None),
    ("network-unknown", ["run", "--rm", "--network", "nosuchnet-xyz", "busybox", "true"], None),
    ("image-traversal", _run(image="../../etc"), None),
    ("image-unknown", _run(image="nosuchimage-xyz"), None),
    ("image-newline", _run(image="busybox\n"), None),
    ("image-absolute", _run(image="/bin"), None),
    # other verbs
    ("rm-traversal", ["rm", "-f", "../../x"], None),
    ("inspect-shell", ["inspect", "$(id)"], None),
    ("logs-negative-tail", ["logs", "--tail", "-5", "nosuch"], None),
    ("logs-bad-since", ["logs", "--since", "bogus", "nosuch"], None),
    ("events-bad-filter", ["events", "--filter", "bogus=1", "--until", "0"], None),
    ("events-bad-since", ["events", "--since", "yesterday-ish", "--until", "0"], None),
    ("exec-nosuch", ["exec", "nosuch", "--", "true"], None),
    ("kill-bad-signal", ["kill", "--signal", "SIGBOGUS", "nosuch"], None),
    ("network-create-bad-subnet", ["network", "create", "--subnet", "999.0.0.0/8", "n1"], None),
    ("network-create-traversal", ["network", "create", "--subnet", "10.231.0.0/24", "../n"], None),
    ("export-nosuch", ["export", "nosuch", "-o", "/nonexistent/dir/f.tar"], None),
    ("stop-negative-timeout", ["stop", "-t", "-5", "nosuch"], None),
]


@pytest.fixture(scope="module")
def results(storage_dir: Path) -> Iterator[dict[str, dict[str, Any]]]:
    env = {**os.environ, "CODEX32_STORAGE_DIR": str(storage_dir)}
    # Built first, so that a case which reaches a start is judged by its refusal alone
    # (the first start of a session would print the build's progress too).
    for template in ("busybox", "python"):
        subprocess.run([sys.executable, "-m", "codex32", "build", template], env=env,
                       capture_output=True, check=True, timeout=600)  # fmt: skip
    with host_tmpdir() as tmp:
        env_file = tmp / "env"
        env_file.write_bytes(b"A=1\x002\n")
        cases = [argv for _id, argv, _reason in CASES]
        cases.append(_run("--env-file", str(env_file)))
        proc = subprocess.run(
            [sys.executable, str(HERE / "cli_batch.py")], input=json.dumps(cases),
            capture_output=True, text=True, env=env, timeout=600, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    ids = [case_id for case_id, _argv, _reason in CASES] + ["env-file-nul"]
    yield dict(zip(ids, found, strict=True))


def _params() -> list[Any]:
    params = []
    for case_id, _argv, reason in [*CASES, ("env-file-nul", [], None)]:
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(case_id, id=case_id, marks=marks))
    return params


def assert_refused(result: dict[str, Any], what: str) -> None:
    stderr = result["stderr"]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, f"{what}: traceback\n{stderr}"
    assert result["code"] == 125, f"{what}: exit {result['code']}\n{stderr}{result['stdout']}"
    assert len(lines) == 1, f"{what}: {len(lines)} lines on stderr:\n{stderr}"
    assert lines[0].startswith("codex32: "), f"{what}: {lines[0]}"
    assert result["left"] == [], f"{what}: left {result['left']}"


@pytest.mark.parametrize("case_id", _params())
def test_hostile_command_line_is_refused(case_id: str, results: dict[str, dict[str, Any]]) -> None:
    assert_refused(results[case_id], case_id)


REAL = [
    [b"--name", b"\xff\xfe"],
    [b"--hostname", b"h\nx"],
    [b"-v", b"/tmp:/x:ro:extra"],
    [b"--ulimit", b"nofile=99999999999999999999999"],
    [b"-m", b"-1"],
    [b"--stop-signal", b"SIGBOGUS"],
]


@pytest.mark.parametrize("options", REAL, ids=lambda o: o[0].decode())
def test_through_the_real_executable(options: list[bytes], storage_dir: Path) -> None:
    """The console script itself (fork server prestarted for run) refuses the same way."""
    env = {**os.environ, "CODEX32_STORAGE_DIR": str(storage_dir)}
    exe = str(Path(sys.executable).with_name("codex32")).encode()
    argv = [exe, b"run", b"--rm", b"--network", b"none", *options, b"busybox", b"true"]
    before = sorted(os.listdir(storage_dir / "containers"))
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    left = sorted(set(os.listdir(storage_dir / "containers")) - set(before))
    assert_refused({"code": proc.returncode, "stderr": proc.stderr.decode(errors="replace"),
                    "stdout": proc.stdout.decode(errors="replace"), "left": left},
                   repr(options))  # fmt: skip

"""Issue 11, items 1 and 2: what a container could do with the engine's descriptors.

Each test is the attack, run as a container would run it, at STANDARD and STRICT:
a process started by ``exec`` (or ``run``) looks for any socket it inherited from
the engine and forges launch-protocol messages on it (a host pid to put in the
container's cgroup, an error message with terminal escapes); a background process
keeping a descriptor must not hold ``exec`` up; and a process in the container
tries to ptrace the ``exec`` set-up process while it joins. The attacks must fail.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from lifecycle_support import (
    CODEX32,
    Containers,
    cli_env,
    containers,  # noqa: F401 - a pytest fixture, used by name
    eventually,
    sh,
)

from codex32 import ContainerConfig, ContainerEngine, IsolationType, LaunchError

pytestmark = pytest.mark.root

LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"
LEVELS = [IsolationType.STANDARD, IsolationType.STRICT]

# Sends MESSAGE (argv[1]) on every socket among the process's descriptors; prints
# "sent N" for each one the send worked on, "none" if there was no socket.
FORGE = """
import os, socket, sys
sent = 0
for name in os.listdir("/proc/self/fd"):
    try:
        if not os.readlink("/proc/self/fd/" + name).startswith("socket:"):
            continue
        s = socket.socket(fileno=int(name))
        s.send(sys.argv[1].encode())
        s.detach()
        sent += 1
        print("sent", name, flush=True)
    except OSError:
        pass
print("none" if not sent else "done", flush=True)
"""


# Every descriptor of the shell itself (listed by a child), with what it points at.
DESCRIPTORS = "ls -l /proc/$$/fd"


def _descriptors(output: bytes) -> dict[str, str]:
    """``ls -l`` of a fd directory as {fd: target}."""
    found = {}
    for line in output.decode().replace("\r", "").splitlines():
        if " -> " in line:
            left, target = line.split(" -> ", 1)
            found[left.split()[-1]] = target
    return found


def _python_loop(level: IsolationType) -> ContainerConfig:
    return ContainerConfig(
        image="python", command=["sh", "-c", LOOP], isolation=level, network="none"
    )


@pytest.mark.parametrize("level", LEVELS)
def test_an_execd_process_holds_no_engine_descriptor(
    containers: Containers, level: IsolationType
) -> None:
    container = containers.running(sh(LOOP, isolation=level, network="none"))
    for tty in (False, True):
        result = container.exec_run(["sh", "-c", DESCRIPTORS], tty=tty)
        assert result.exit_code == 0, result
        fds = _descriptors(result.output)
        assert set(fds) == {"0", "1", "2"}, f"tty={tty}: {fds}"
        assert not any(target.startswith("socket:") for target in fds.values()), fds


@pytest.mark.parametrize("level", LEVELS)
def test_a_containers_command_holds_no_engine_descriptor(
    engine: ContainerEngine, level: IsolationType
) -> None:
    for tty in (False, True):
        config = sh(DESCRIPTORS, isolation=level, network="none", tty=tty, auto_remove=True)
        result = engine.containers.run(config)
        assert result.exit_code == 0, result
        fds = _descriptors(result.output)
        assert set(fds) == {"0", "1", "2"}, f"tty={tty}: {fds}"


@pytest.mark.parametrize("level", LEVELS)
def test_a_forged_created_message_puts_no_host_process_in_the_cgroup(
    containers: Containers, level: IsolationType
) -> None:
    container = containers.running(_python_loop(level))
    host = subprocess.Popen(["sleep", "600"])
    try:
        forged = f'{{"type":"created","pid":{host.pid}}}'
        result = container.exec_run(["python3", "-c", FORGE, forged])
        assert result.exit_code == 0, result
        assert result.output.decode().split() == ["none"], result.output
        with open(f"/proc/{host.pid}/cgroup") as f:
            assert container.id not in f.read(), "a host process was put in the container"
    finally:
        host.kill()
        host.wait()


@pytest.mark.parametrize("level", LEVELS)
def test_a_container_cannot_forge_the_engines_error_messages(
    containers: Containers, storage_dir: Path, level: IsolationType
) -> None:
    container = containers.running(_python_loop(level))
    forged = (
        '{"type":"error","step":"exec","errno":0,"exit_code":0,'
        '"message":"\\u001b]0;owned\\u0007\\u001b[31mfine\\nError: forged second line"}'
    )
    run = subprocess.run(
        [CODEX32, "exec", container.name, "--", "python3", "-c", FORGE, forged],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=cli_env(storage_dir), timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run
    assert run.stdout.split() == ["none"], run
    assert "forged" not in run.stderr and "\x1b" not in run.stderr, run.stderr


@pytest.mark.parametrize("level", LEVELS)
def test_a_background_process_does_not_hold_exec(
    containers: Containers, storage_dir: Path, level: IsolationType
) -> None:
    container = containers.running(sh(LOOP, isolation=level, network="none"))
    started = time.monotonic()
    result = container.exec_run(["sh", "-c", "sleep 30 >/dev/null 2>&1 &"])
    assert result.exit_code == 0, result
    assert time.monotonic() - started < 10, "exec waited for a background process"
    started = time.monotonic()
    run = subprocess.run(
        [CODEX32, "exec", container.name, "--", "sh", "-c", "sleep 30 >/dev/null 2>&1 &"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=cli_env(storage_dir), timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0
    assert time.monotonic() - started < 10, "codex32 exec waited for a background process"


@pytest.mark.parametrize("level", LEVELS)
def test_exec_tty_never_hands_in_the_callers_terminal(
    containers: Containers, level: IsolationType
) -> None:
    # The caller's own terminal (here a pty the test holds) must not reach the
    # container: exec -t gives it a terminal of its own devpts, as run -t does.
    container = containers.running(sh(LOOP, isolation=level, network="none"))
    master, caller_tty = os.openpty()
    try:
        ours = os.fstat(caller_tty)
        script = 'for f in 0 1 2; do stat -L -c "%d:%i" /proc/$$/fd/$f; done; tty'
        result = container.exec_run(
            ["sh", "-c", script], tty=True, stdin=caller_tty, stdout=caller_tty
        )
        assert result.exit_code == 0
        os.set_blocking(master, False)
        seen = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b"/dev/pts/" not in seen:
            try:
                seen += os.read(master, 4096)
            except BlockingIOError:
                time.sleep(0.05)
        lines = seen.decode().replace("\r", "").split()
        caller = f"{ours.st_dev}:{ours.st_ino}"
        assert lines[-1].startswith("/dev/pts/"), lines
        assert caller not in lines[:3], f"the caller's terminal {caller} was handed in: {lines}"
    finally:
        os.close(master)
        os.close(caller_tty)


# Watches /proc in a tight loop for exec's set-up processes (their command line is
# still the host's ``codex32._runtime.exec``) and, again and again until each has exec'd,
# tries to PTRACE_SEIZE and PTRACE_ATTACH it and to read where its descriptors
# lead, until argv[1] seconds pass, argv[2] of them were seen and are gone, or one
# was ptraced (exiting then lets it go).
# Prints "seen N seized N fds N" (set-up processes seen, ptraced, fds read).
PTRACE = r"""
import ctypes, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 16, 17, 0x4206, 0x4207
deadline = time.monotonic() + float(sys.argv[1])
seen, done, active, seized, fds = 0, set(), set(), set(), set()

def setup(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"\0codex32._runtime.exec\0" in f.read()  # "-m codex32._runtime.exec FD"
    except OSError:
        return False

def let_go(pid, request):
    # Detach (a process that exec'd meanwhile is the container's own: let it run).
    if request == PTRACE_SEIZE:
        libc.ptrace(PTRACE_INTERRUPT, pid, None, None)
    try:
        os.waitpid(pid, 0x40000000)  # __WALL: its ptrace-stop
    except OSError:
        pass
    libc.ptrace(PTRACE_DETACH, pid, None, None)
    try:  # an ATTACH's SIGSTOP that landed after all would leave it stopped
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass

open("/tmp/attacker-ready", "w").close()
while time.monotonic() < deadline and (seen < int(sys.argv[2]) or active) and not seized:
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in done | active | {os.getpid()} and setup(name):
            active.add(int(name))
            seen += 1
    for pid in list(active):
        if pid not in seized:
            for request in (PTRACE_SEIZE, PTRACE_ATTACH):
                if libc.ptrace(request, pid, None, None) == 0:
                    if setup(pid):
                        seized.add(pid)
                    let_go(pid, request)
                    break
        if pid not in fds:
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    os.readlink(f"/proc/{pid}/fd/{fd}")
                if setup(pid):
                    fds.add(pid)
            except OSError:
                pass
        if not setup(pid):
            active.discard(pid)
            done.add(pid)
print("seen", seen, "seized", len(seized), "fds", len(fds), flush=True)
"""


@pytest.mark.parametrize("level", LEVELS)
def test_a_container_cannot_ptrace_the_exec_set_up_process(
    containers: Containers, monkeypatch: pytest.MonkeyPatch, level: IsolationType
) -> None:
    # CVE-2016-9962: while exec's set-up process is still the host's Python (all of
    # the engine's capabilities, no seccomp yet) in the container's pid namespace,
    # a process of the container attaches to it. The engine holds the set-up step
    # open 0.3 s here so that the attacker sees every one.
    container = containers.running(_python_loop(level))
    ready = Path(f"/proc/{container.record.pid}/root/tmp/attacker-ready")
    outcome: list[bytes] = []
    attacker = threading.Thread(
        target=lambda: outcome.append(
            container.exec_run(["python3", "-c", PTRACE, "30", "5"]).output
        )
    )
    attacker.start()
    try:
        assert eventually(ready.exists, 15), "the attacker did not start"
        monkeypatch.setenv("CODEX32_TEST_EXEC_PAUSE", "0.3")
        for _ in range(5):
            assert container.exec_run(["true"]).exit_code == 0
    finally:
        attacker.join(60)
    words = outcome[0].decode().split()
    found = dict(zip(words[::2], (int(w) for w in words[1::2]), strict=True))
    assert found["seized"] == 0, f"a container process ptraced exec's set-up: {found}"
    assert found["fds"] == 0, f"a container process read exec's set-up descriptors: {found}"
    assert found["seen"] >= 3, f"the attacker saw too few set-up processes to judge: {found}"


def test_a_set_up_error_is_printed_on_one_line_with_escapes_shown(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    # A set-up error carries text from the container's side (here a command name the
    # container's PATH does not have): the engine prints it escaped, on one line.
    name = "no\x1b]0;owned\x07such\nError: forged"
    container = containers.running(sh(LOOP, network="none"))
    with pytest.raises(LaunchError) as raised:
        container.exec_run([name])
    assert "\x1b" not in str(raised.value) and "\n" not in str(raised.value)
    assert "no\\x1b]0;owned\\x07such\\x0aError: forged" in str(raised.value)
    with pytest.raises(LaunchError) as raised:
        engine.containers.run(sh("true", network="none", auto_remove=True).model_copy(
            update={"command": [name]}
        ))  # fmt: skip
    assert "\x1b" not in str(raised.value) and "\n" not in str(raised.value)
    run = subprocess.run(
        [CODEX32, "exec", container.name, "--", name],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env=cli_env(storage_dir), timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 127, run
    assert len(run.stderr.splitlines()) == 1 and "\x1b" not in run.stderr, run.stderr

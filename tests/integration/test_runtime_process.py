"""The container's process, from inside: hostname, env, cwd, user, limits, exit codes, init.

Docker's exit codes: the command's own, 125 when the engine fails, 126 when the
command cannot be executed, 127 when it is not found; the last three raise
``LaunchError`` from the API. ``init=True`` runs tini (bound in as /dev/init) as PID 1,
which reaps orphaned zombies that a plain PID 1 leaves behind.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import (
    LEVELS,
    assert_nothing_new,
    facts,
    output_of,
    sh,
    snapshot,
    status_fields,
)
from lifecycle_support import CODEX32, cli_env, eventually

from codex32 import ContainerConfig, ContainerEngine, IsolationType, LaunchError, Ulimit

pytestmark = pytest.mark.root

MINIMAL, STANDARD, STRICT = LEVELS
TINI = "/usr/bin/tini-static"
STOP_TIMEOUT = 20.0


def _config(command: list[str], **options: object) -> ContainerConfig:
    return ContainerConfig.model_validate(
        {"image": "busybox", "command": command, "auto_remove": True, **options}
    )


# -- hostname, env, cwd ----------------------------------------------------------


@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_hostname(engine: ContainerEngine, level: IsolationType) -> None:
    script = (
        'echo "uname=$(hostname)"; echo "kernel=$(cat /proc/sys/kernel/hostname)"; '
        'echo "env=$HOSTNAME"'
    )
    found = facts(output_of(engine, sh(script, isolation=level, hostname="bot-7")))
    assert found == {"uname": "bot-7", "kernel": "bot-7", "env": "bot-7"}


def test_env(engine: ContainerEngine) -> None:
    env = {"GREETING": "hello world", "WITH_EQUALS": "a=b=c", "EMPTY": "", "PATH": "/bin"}
    script = (
        'echo "greeting=$GREETING"; echo "with_equals=$WITH_EQUALS"; '
        'echo "empty=${EMPTY-unset}"; echo "path=$PATH"; echo "home=$HOME"'
    )
    found = facts(output_of(engine, sh(script, env=env)))
    assert found == {
        "greeting": "hello world",
        "with_equals": "a=b=c",
        "empty": "",
        "path": "/bin",
        "home": "/root",
    }


def test_env_is_not_inherited_from_the_engine(
    engine: ContainerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEX32_TEST_SECRET", "leaked")
    out = output_of(engine, sh("env"))
    assert "CODEX32_TEST_SECRET" not in out
    names = {line.partition("=")[0] for line in out.splitlines()}
    assert {"PATH", "HOSTNAME", "HOME"} <= names


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_working_dir_is_created_when_missing(engine: ContainerEngine, level: IsolationType) -> None:
    config = sh("pwd", isolation=level, working_dir="/srv/app/run")
    out = output_of(engine, config)
    assert out == "/srv/app/run\n"


def test_working_dir_that_is_a_file_fails(engine: ContainerEngine, storage_dir: Path) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError) as failure:
        engine.containers.run(sh("pwd", working_dir="/etc/passwd"))
    assert failure.value.exit_code == 125
    assert_nothing_new(before, storage_dir)


# -- user ------------------------------------------------------------------------

USER_SCRIPT = 'echo "uid=$(id -u)"; echo "gid=$(id -g)"; echo "groups=$(id -G)"; echo "home=$HOME"'


@pytest.mark.parametrize(
    ("user", "uid", "gid", "home"),
    [
        ("bot", "1000", "1000", "/home/bot"),
        ("1000:1000", "1000", "1000", "/home/bot"),
        ("bot:nogroup", "1000", "65534", "/home/bot"),
        ("nobody", "65534", "65534", "/nonexistent"),
        ("4242", "4242", "0", "/"),  # a uid without a passwd entry: gid 0, as Docker
        ("root", "0", "0", "/root"),
    ],
)
@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_user(
    engine: ContainerEngine, level: IsolationType, user: str, uid: str, gid: str, home: str
) -> None:
    found = facts(output_of(engine, sh(USER_SCRIPT, isolation=level, user=user)))
    assert (found["uid"], found["gid"], found["home"]) == (uid, gid, home)
    assert found["groups"].split() == [gid]


@pytest.mark.parametrize("user", ["nosuchuser", "bot:nosuchgroup"])
def test_unknown_user_is_an_engine_error(
    engine: ContainerEngine, storage_dir: Path, user: str
) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError) as failure:
        engine.containers.run(sh("id", user=user))
    assert failure.value.exit_code == 125
    assert failure.value.step == "user"
    assert "nosuch" in str(failure.value)
    assert_nothing_new(before, storage_dir)


# -- rlimits ---------------------------------------------------------------------


def _limits(text: str) -> dict[str, tuple[str, str]]:
    """/proc/PID/limits: ``Max open files  100  200  files`` -> {"open files": ("100", "200")}."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines()[1:]:
        words = line[len("Max ") :].split()
        # The name is every word before the first number or "unlimited".
        index = next(i for i, w in enumerate(words) if w.isdigit() or w == "unlimited")
        found[" ".join(words[:index])] = (words[index], words[index + 1])
    return found


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_ulimits(engine: ContainerEngine, level: IsolationType) -> None:
    config = sh(
        "cat /proc/self/limits",
        isolation=level,
        ulimits=[Ulimit.parse("nofile=100:200"), Ulimit.parse("core=0")],
    )
    limits = _limits(output_of(engine, config))
    assert limits["open files"] == ("100", "200")
    assert limits["core file size"] == ("0", "0")


def test_ulimit_is_what_the_shell_sees(engine: ContainerEngine) -> None:
    out = output_of(engine, sh("ulimit -n; ulimit -Hn", ulimits=[Ulimit.parse("nofile=64:128")]))
    assert out.split() == ["64", "128"]


# -- signals: the command starts as runc starts it -----------------------------------


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_pid_1_starts_with_no_signal_ignored_or_blocked(
    engine: ContainerEngine, level: IsolationType
) -> None:
    """Not Python's SIG_IGN for SIGPIPE/SIGXFSZ (and the launcher's SIGINT) inherited."""
    config = _config(["cat", "/proc/self/status"], isolation=level)
    fields = status_fields(output_of(engine, config))
    assert (fields["SigIgn"], fields["SigBlk"]) == ("0000000000000000", "0000000000000000")


def _ignore_every_signal() -> None:
    """In the child before exec: SIG_IGN for every signal, glibc's own 32 and 33 too
    (rt_sigaction by number: glibc's wrapper refuses them), as a launcher might leave."""
    libc = ctypes.CDLL(None, use_errno=True)
    ignore = (ctypes.c_ulong * 4)(1, 0, 0, 0)  # handler SIG_IGN, flags, restorer, mask
    number = {"x86_64": 13, "aarch64": 134}[os.uname().machine]
    for sig in range(1, signal.NSIG):
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            libc.syscall(number, sig, ctypes.byref(ignore), None, 8)


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_signals_the_launcher_ignored_are_reset_too(
    storage_dir: Path, engine: ContainerEngine, level: IsolationType
) -> None:
    """``codex32 run`` started with every signal ignored: PID 1 still has none."""
    proc = subprocess.run(
        [CODEX32, "run", "--rm", "--network", "none", "--isolation", level.value,
         "busybox", "--", "cat", "/proc/self/status"],
        env=cli_env(storage_dir), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120, check=False, preexec_fn=_ignore_every_signal,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fields = status_fields(proc.stdout)
    assert (fields["SigIgn"], fields["SigBlk"]) == ("0000000000000000", "0000000000000000")


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_a_pipeline_whose_reader_stops_ends(engine: ContainerEngine, level: IsolationType) -> None:
    """SIGPIPE at its default kills ``tr`` once ``head`` is gone; ignored, tr would spin.

    busybox's ``timeout`` turns a hang into a failure (exit 143) instead of a stuck
    test; it runs below PID 1, which the kernel shields from its SIGTERM.
    """
    script = 'timeout 30 sh -c \'yes BBBB | tr -d "\\n" | head -c 100000 | wc -c\'; echo "exit=$?"'
    out = output_of(engine, sh(script, isolation=level))
    assert out.split() == ["100000", "exit=0"], out


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_a_write_past_ulimit_fsize_is_killed_by_sigxfsz(
    engine: ContainerEngine, level: IsolationType
) -> None:
    """128 + SIGXFSZ (25) = 153. dd runs as a child: the kernel never kills PID 1 of a
    pid namespace with a signal at its default action (Docker's containers alike)."""
    script = "dd if=/dev/zero of=/tmp/big bs=1k count=16 2>/dev/null; exit $?"
    result = engine.containers.run(
        sh(script, isolation=level, ulimits=[Ulimit.parse("fsize=4096")])
    )
    assert result.exit_code == 153, result.error_output


# -- exit codes ------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_the_commands_exit_code(engine: ContainerEngine, code: int) -> None:
    result = engine.containers.run(sh(f"echo out; echo err >&2; exit {code}"))
    assert result.exit_code == code
    assert result.ok is (code == 0)
    assert result.output == b"out\n"
    assert result.error_output == b"err\n"


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [
        (["/etc/passwd"], 126),  # exists, not executable
        (["/etc"], 126),  # a directory
        (["no-such-command"], 127),  # not in $PATH
        (["/no/such/file"], 127),
    ],
)
@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_exec_failures(
    engine: ContainerEngine,
    storage_dir: Path,
    level: IsolationType,
    command: list[str],
    exit_code: int,
) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError) as failure:
        engine.containers.run(_config(command, isolation=level))
    assert failure.value.exit_code == exit_code
    assert failure.value.step == "exec"
    assert command[0] in str(failure.value)
    assert_nothing_new(before, storage_dir)


def test_exec_failure_with_init_is_reported_too(engine: ContainerEngine) -> None:
    with pytest.raises(LaunchError) as failure:
        engine.containers.run(_config(["no-such-command"], init=True))
    assert failure.value.exit_code == 127


def test_a_shell_that_is_not_found_inside_exits_127(engine: ContainerEngine) -> None:
    """The command's own 127 (sh could not find a program) is passed through."""
    result = engine.containers.run(sh("no-such-program"))
    assert result.exit_code == 127


# -- PID 1, init and zombies ----------------------------------------------------

# A checker runs in the background while PID 1 (or tini's child) becomes `cat` on a
# FIFO: a process that never waits for children, and that exits when the checker is
# done. The checker orphans `sleep 0.1` (its parent `sh -c` exits at once), so the
# kernel re-parents it to PID 1 of the namespace; once it has exited (a zombie, or
# already reaped) and 0.3 s more have passed, the checker reports its state. Under
# tini it is gone; under a PID 1 that never waits it stays a zombie (the control).
ZOMBIE_SCRIPT = r"""
mkfifo /tmp/zombie-done
(
    sh -c 'sleep 0.1 & echo $! > /tmp/orphan'
    orphan=$(cat /tmp/orphan)
    stat_of() {
        state=gone parent=none
        if read -r line < /proc/$orphan/stat 2>/dev/null; then
            set -- ${line##*) }
            state=$1 parent=$2
        fi
    }
    i=0
    while [ $i -lt 200 ]; do
        stat_of
        [ "$state" = Z ] || [ "$state" = gone ] && break
        sleep 0.05
        i=$((i + 1))
    done
    sleep 0.3
    stat_of
    echo "orphan_state=$state"
    echo "orphan_parent=$parent"
    echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"
    echo "pid1_md5=$(md5sum /proc/1/exe | cut -d' ' -f1)"
    echo done > /tmp/zombie-done
) &
exec cat /tmp/zombie-done > /dev/null
"""


def _tini_md5() -> str:
    return hashlib.md5(Path(TINI).read_bytes()).hexdigest()


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_init_reaps_orphaned_zombies(engine: ContainerEngine, level: IsolationType) -> None:
    found = facts(output_of(engine, sh(ZOMBIE_SCRIPT, isolation=level, init=True)))
    assert found["pid1"].split()[:2] == ["/dev/init", "--"]
    assert found["pid1_md5"] == _tini_md5()
    assert found["orphan_state"] == "gone"


def test_without_init_a_plain_pid_1_leaves_zombies(engine: ContainerEngine) -> None:
    """The control: the probe does see a zombie when PID 1 does not reap."""
    found = facts(output_of(engine, sh(ZOMBIE_SCRIPT)))
    assert found["pid1"].split() == ["cat", "/tmp/zombie-done"]
    assert (found["orphan_state"], found["orphan_parent"]) == ("Z", "1")


def test_without_init_the_command_is_pid_1(engine: ContainerEngine) -> None:
    found = facts(output_of(engine, sh('echo "self=$$"; echo "ppid=$PPID"')))
    assert found == {"self": "1", "ppid": "0"}


def test_with_init_the_command_is_pid_2_under_tini(engine: ContainerEngine) -> None:
    out = output_of(engine, sh('echo "self=$$"; echo "ppid=$PPID"', init=True))
    assert facts(out) == {"self": "2", "ppid": "1"}


def test_init_passes_the_exit_code_through(engine: ContainerEngine) -> None:
    assert engine.containers.run(sh("exit 5", init=True)).exit_code == 5


def test_init_reports_a_killed_command_as_128_plus_signal(engine: ContainerEngine) -> None:
    # Without init the command is PID 1 and a signal from inside cannot kill it.
    assert engine.containers.run(sh("kill -9 $$", init=True)).exit_code == 128 + 9


# Prints who it is and who PID 1 is once its trap is set, then loops until SIGTERM.
TERM_TRAP = r"""
trap 'exit 3' TERM
echo "self=$$"
echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"
echo ready
while :; do sleep 0.1; done
"""


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_init_forwards_the_stop_signal_to_the_command(
    engine: ContainerEngine, level: IsolationType
) -> None:
    """``stop`` signals PID 1, which is tini under ``init``: it must pass SIGTERM on to
    the command (sh, PID 2), whose trap exits 3. Were it not forwarded, the stop
    would end in SIGKILL after the timeout: exit code 137, and that long."""
    container = engine.containers.run_detached(
        _config(["sh", "-c", TERM_TRAP], isolation=level, init=True, auto_remove=False)
    )
    try:
        assert eventually(lambda: b"ready\n" in container.logs(), 15), container.logs()
        found = facts(container.logs().decode())
        assert found["self"] == "2"
        assert found["pid1"].split()[:4] == ["/dev/init", "--", "sh", "-c"]
        started = time.monotonic()
        container.stop(timeout=STOP_TIMEOUT)
        took = time.monotonic() - started
        assert container.wait(timeout=10) == 3
        container.reload()
        assert (container.record.exit_code, container.record.signal) == (3, 0)
        assert took < STOP_TIMEOUT / 2, f"the stop took {took:.1f}s: SIGKILL, not the trap"
    finally:
        container.remove(force=True)


def test_only_the_containers_processes_are_visible(engine: ContainerEngine) -> None:
    out = output_of(engine, sh("ls -d /proc/[0-9]* | wc -l"))
    # sh (PID 1), ls and wc's subshell at most: not the host's hundreds.
    assert int(out) <= 4

"""The engine's side of the launch protocol (see ``_sync`` for the message table).

Spawns the set-up process with ``subprocess`` (safe from a threaded caller), sends
the plan, lets the caller place PID 1 in cgroups and networks while nothing of the
container runs yet, then waits for ``started`` or a typed error.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING

from codex32._linux import process as process_info
from codex32._plan.plan import Plan
from codex32._runtime import faults as _faults
from codex32._runtime import protocol as _sync
from codex32.errors import LaunchError, printable

if TYPE_CHECKING:
    from codex32._runtime.sandbox import Sandbox

log = logging.getLogger(__name__)

FileArg = int | IO[bytes] | None

# The monitor needs nothing but the standard library and codex32 itself: with -S it
# skips site-packages (and their .pth files, ~20 ms), finding codex32 by PYTHONPATH.
MONITOR_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    # The directory holding the codex32 package (this file is codex32/_runtime/launch.py).
    "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    **_faults.environment(),  # a fault test's pause point (tests/faults), else nothing
}


@dataclass(frozen=True)
class ExitStatus:
    """How a container's PID 1 ended (Docker's codes: 128+N for signal N)."""

    exit_code: int
    signal: int


class ForkServer:
    """The engine's handle on ``_forkserver``: started on first use, one per engine.

    Thread-safe: one ``sendmsg`` per request under a lock. ``spawn`` declines (and
    the caller starts a fresh interpreter instead) when the calling thread is in
    other namespaces than the server, e.g. a test that entered its own network
    namespace after the server started.
    """

    def __init__(self, *, once: bool = False) -> None:
        """``once``: the server becomes the first monitor it is asked for, instead of
        forking it (then a regular server is started if another one is needed)."""
        self._lock = threading.Lock()
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._namespaces: tuple[int, int] = (0, 0)
        self._once = once
        self._spent: subprocess.Popen[bytes] | None = None  # a once-server, now a monitor

    @staticmethod
    def _current_namespaces() -> tuple[int, int]:
        return (
            os.stat("/proc/thread-self/ns/net").st_ino,
            os.stat("/proc/thread-self/ns/mnt").st_ino,
        )

    def _ensure(self) -> socket.socket:
        if self._control is not None and self._process and self._process.poll() is None:
            return self._control
        self._stop()
        ours, theirs = _sync.socket_pair()
        mode = ["--once"] if self._once else []
        try:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-S",
                    "-m",
                    "codex32._runtime.forkserver",
                    str(theirs.fileno()),
                    *mode,
                ],
                pass_fds=(theirs.fileno(),),
                env=MONITOR_ENV,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self._control = ours
        self._namespaces = self._current_namespaces()
        return ours

    def spawn(self, sync_fd: int, stdin: FileArg, stdout: FileArg, stderr: FileArg) -> bool:
        """Have the server fork a monitor on ``sync_fd``; False if it cannot serve us."""
        with self._lock:
            control = self._ensure()
            if self._current_namespaces() != self._namespaces:
                return False
            with _Descriptors((stdin, stdout, stderr)) as stdio:
                fds = array.array("i", [sync_fd, *stdio])
                control.sendmsg([b"spawn"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            if self._once:  # that process is the monitor now: not ours to wait for
                self._once = False
                self._spent, self._process = self._process, None
                control.close()
                self._control = None
                if self._spent is not None:  # it daemonizes at once: reap its first process
                    threading.Thread(target=self._spent.wait, daemon=True).start()
            return True

    def close(self) -> None:
        """Hang up; the server exits (running containers are not affected)."""
        with self._lock:
            self._stop()

    def __del__(self) -> None:
        # An engine dropped without close(): hang up; the server exits at once, and
        # is reaped here so that it leaves no zombie.
        with contextlib.suppress(Exception):
            self._stop()

    def _stop(self) -> None:
        if self._spent is not None and self._spent.poll() is not None:
            self._spent = None  # it daemonized (its first process exited): reaped
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


_prestarted: ForkServer | None = None


def prestart_fork_server() -> None:
    """Start a fork server now, for the next engine this process makes to adopt.

    The CLI calls this first thing for the verbs that start a container, before it
    imports typer and pydantic: the server's interpreter start-up and imports
    (~100 ms) then overlap the CLI's own (~300 ms), instead of following them as a
    fresh monitor interpreter would. A CLI process is single-threaded, but it still
    never forks itself: its heap would become each monitor's private memory.
    """
    global _prestarted  # noqa: PLW0603 - one per process, taken by the first engine
    if _prestarted is None:
        # A once-server: it becomes the container's monitor itself, so the monitor is
        # no bigger than a fresh interpreter's (a forked one would keep the server's
        # pages to itself once the CLI exits and the server with it).
        server = ForkServer(once=True)
        with server._lock:
            server._ensure()
        _prestarted = server


def take_prestarted_fork_server() -> ForkServer | None:
    """The fork server ``prestart_fork_server`` started, once (then None)."""
    global _prestarted
    server, _prestarted = _prestarted, None
    return server


class _Descriptors:
    """Turn ``FileArg`` values into raw descriptors for SCM_RIGHTS (None: ours)."""

    def __init__(self, args: tuple[FileArg, FileArg, FileArg]) -> None:
        self._args = args
        self._opened: list[int] = []

    def __enter__(self) -> list[int]:
        fds = []
        for default, arg in zip((0, 1, 2), self._args, strict=True):
            if arg is None:
                fds.append(default)
            elif arg == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                self._opened.append(fd)
                fds.append(fd)
            elif isinstance(arg, int):
                fds.append(arg)
            else:
                fds.append(arg.fileno())
        return fds

    def __exit__(self, *exc: object) -> None:
        for fd in self._opened:
            os.close(fd)


class Launch:
    """One container start: the set-up process and its sync socket."""

    def __init__(
        self,
        plan: Plan,
        container: str,
        monitor: dict[str, object],
        fork_server: ForkServer | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        """``sandbox``: a pooled one to start in (its namespaces and PID 1 exist
        already) instead of a monitor forked for this start."""
        self.plan = plan
        self.container = container
        self.monitor = monitor
        self.fork_server = fork_server
        self.sandbox = sandbox
        self.claimed = False  # True once the container runs in the pooled sandbox
        self.in_cgroup = False  # PID 1 was forked into its cgroup (v2, ``cgroup_fd``)
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket
        self._child_sock: socket.socket | None = None
        if sandbox is None:
            self._sock, self._child_sock = _sync.socket_pair()
        else:
            self._sock = sandbox.sock

    def start(
        self,
        *,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
        on_created: Callable[[int], dict[str, object] | None] | None = None,
        cgroup_fd: Callable[[], int | None] | None = None,
    ) -> int:
        """Run the plan up to the container's exec; return PID 1's host pid.

        ``on_created(pid)`` places PID 1 before it runs anything of the container's;
        what it returns goes to the monitor with the go-ahead (the cgroup paths, which
        the monitor records with the start). ``cgroup_fd()``: a descriptor of the
        container's cgroup directory to fork PID 1 into (v2), or None; asked for once
        the monitor is on its way, sent with the plan, closed here; ``in_cgroup`` then
        says whether PID 1 was forked there (else ``on_created`` moves it)."""
        stdin = stdin if stdin is not None else subprocess.DEVNULL
        created = self._claim(stdin, stdout, stderr) if self.sandbox is not None else None
        if created is None:
            self._spawn(stdin, stdout, stderr)
        try:
            if created is None:
                message = {"type": "plan", "plan": asdict(self.plan), "monitor": self.monitor}
                target = cgroup_fd() if cgroup_fd is not None else None
                try:
                    _sync.send_with_fds(self._sock, message, [] if target is None else [target])
                finally:
                    if target is not None:
                        os.close(target)
                created = self._expect("created")
                self.in_cgroup = created.get("in_cgroup") is True
            if self._process is not None:
                # The monitor has daemonized by now; its first process has exited.
                self._process.wait()
            self.pid = int(created["pid"])
            if self.sandbox is not None and self.pid != self.sandbox.pid:
                raise LaunchError(
                    f"the sandbox reported pid {self.pid}, not its PID 1 ({self.sandbox.pid})",
                    container=self.container,
                    step="created",
                )
            if not process_info.is_namespace_init(self.pid):
                raise LaunchError(
                    f"pid {self.pid} is not the first process of a pid namespace",
                    container=self.container,
                    step="created",
                )
            placed: dict[str, object] | None = None
            if on_created is not None:
                try:
                    placed = on_created(self.pid)
                except BaseException:
                    _sync.send(self._sock, {"type": "abort"})
                    raise
            _sync.send(self._sock, {**(placed or {}), "type": "proceed"})
            self._expect("started")
            return self.pid
        except LaunchError as exc:
            if exc.step in ("created", "started") or self._process is None:
                self.abort()
            else:
                # PID 1 reported its own failure and exits by itself; stage1 reaps it.
                self.pid = None
                self._reap()
            raise
        except BaseException:
            self.abort()
            raise

    def _claim(self, stdin: FileArg, stdout: FileArg, stderr: FileArg) -> _sync.Message | None:
        """Start in the pooled sandbox up to ``created``; None (the sandbox dropped, a
        fresh monitor to be spawned) if it cannot take this container: it died while
        pooled, or refused the claim. Nothing of the container ran in it."""
        assert self.sandbox is not None
        try:
            self.sandbox.claim(asdict(self.plan), self.monitor, stdin, stdout, stderr)
            created = self._expect("created")
        except (LaunchError, OSError) as exc:
            log.warning("a pooled sandbox could not take %s (%s): starting afresh",
                        self.container, exc)  # fmt: skip
            self.sandbox.discard()
            self.sandbox = None
            self._sock, self._child_sock = _sync.socket_pair()
            return None
        except BaseException:  # interrupted mid-claim: the sandbox (and our socket) ends
            self.sandbox.discard()
            self.sandbox = None
            raise
        self.sandbox.claimed()
        self.claimed = True
        return created

    def _spawn(self, stdin: FileArg, stdout: FileArg, stderr: FileArg) -> None:
        """A monitor for this start: forked by the fork server, else a fresh interpreter."""
        assert self._child_sock is not None
        fd = self._child_sock.fileno()
        try:
            if self.fork_server is None or not self.fork_server.spawn(fd, stdin, stdout, stderr):
                self._process = subprocess.Popen(
                    [sys.executable, "-S", "-m", "codex32._runtime.monitor", str(fd)],
                    pass_fds=(fd,),
                    env=MONITOR_ENV,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=stderr,
                    start_new_session=True,
                )
        finally:
            self._child_sock.close()

    def _expect(self, kind: str) -> _sync.Message:
        try:
            message = _sync.receive(self._sock)
        except OSError as exc:
            raise LaunchError(
                "lost the set-up process", container=self.container, step=kind, errno=exc.errno
            ) from exc
        if message is None:
            code = self._process.wait() if self._process else None
            raise LaunchError(
                f"the set-up process exited (status {code}) before the container was {kind}",
                container=self.container,
                step=kind,
            )
        if message.get("type") == "error":
            raise _launch_error(message, self.container, kind)
        if message.get("type") != kind:
            raise LaunchError(
                f"unexpected message {printable(message.get('type'), 40)!r}"
                " from the set-up process",
                container=self.container,
                step=kind,
            )
        return message

    def detach(self) -> None:
        """Hang up: the monitor carries on without us."""
        self._reap()

    def wait(self) -> ExitStatus:
        """Block until PID 1 has exited and been reaped; return how it ended.

        The socket stays open: an ``--rm`` container is removed by its monitor only
        once we hang up (``detach``), so the caller can read its log first.
        """
        try:
            message = _sync.receive(self._sock)
        except OSError:
            message = None
        if message is None or message.get("type") != "exited":
            raise LaunchError(
                "the set-up process died without reporting the container's exit",
                container=self.container,
                step="wait",
            )
        return ExitStatus(int(message["exit_code"]), int(message["signal"]))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the container's PID 1."""
        if self.pid is not None and process_info.is_namespace_init(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def abort(self) -> None:
        """Kill whatever was started and reap the set-up process."""
        self.kill(signal.SIGKILL)
        if self._process is not None and self._process.poll() is None:
            # stage1 kills and reaps PID 1 when the socket closes before 'proceed'.
            self._sock.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
        self._sock.close()


def run_exec(
    pid: int,
    steps: list[dict[str, object]],
    container: str,
    *,
    stdin: FileArg,
    stdout: FileArg,
    stderr: FileArg,
    on_created: Callable[[int], None] | None = None,
    tty: bool = False,
) -> int:
    """Run the exec set-up process against PID ``pid``; return the command's exit code.

    ``on_created`` gets the new process's pid before it runs anything of its own
    (the engine puts it in the container's cgroup there): the pid comes from the
    pidfd the set-up process sends, and must be its child, in the pid namespace of
    the container's PID 1. ``tty``: stdin is a terminal's slave end, which the
    command makes its controlling terminal.
    """
    sock, child = _sync.socket_pair()
    fd = child.fileno()
    try:
        process = subprocess.Popen(
            [sys.executable, "-S", "-m", "codex32._runtime.exec", str(fd)],
            pass_fds=(fd,),
            env=MONITOR_ENV,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    finally:
        child.close()
    pause = os.environ.get("CODEX32_TEST_EXEC_PAUSE")  # tests: widen the set-up window
    with sock:
        request = {"type": "exec", "pid": pid, "steps": steps, "tty": tty}
        _sync.send(sock, request | ({"pause": float(pause)} if pause else {}))
        error: _sync.Message | None = None
        # Until the set-up process exits: only it holds the other end (close-on-exec,
        # and closed in its child), so a background process of the command cannot.
        while True:
            message, fds = _sync.receive_with_fds(sock)
            try:
                if message is None:
                    break
                if message.get("type") == "error":
                    error = message
                elif message.get("type") == "created":
                    try:
                        new_pid = _exec_child(fds, process.pid, pid, container)
                        if on_created is not None:
                            on_created(new_pid)
                    except BaseException:
                        process.kill()
                        process.wait()
                        raise
                    _faults.point("exec.created")
                    _sync.send(sock, {"type": "proceed"})
            finally:
                for received in fds:
                    os.close(received)
        code = process.wait()
    if error is not None:
        raise _launch_error(error, container, "exec")
    return code


def _exec_child(fds: list[int], setup_pid: int, pid1: int, container: str) -> int:
    """The pid of exec's new process, as the kernel names it, checked to be the
    set-up process's child in the container's pid namespace (see ``_exec``)."""
    try:
        if len(fds) != 1:
            raise ValueError(f"{len(fds)} descriptors came with 'created'")
        new_pid = process_info.pid_of_pidfd(fds[0])
        if process_info.parent_pid(new_pid) != setup_pid:
            raise ValueError(f"pid {new_pid} is not the set-up process's child")
        if not process_info.in_pid_namespace_of(new_pid, pid1):
            raise ValueError(f"pid {new_pid} is not in the container's pid namespace")
    except (OSError, ValueError, IndexError) as exc:
        raise LaunchError(
            f"exec set-up: {printable(exc)}", container=container, step="created"
        ) from exc
    return new_pid


def _launch_error(message: _sync.Message, container: str, step: str) -> LaunchError:
    """The ``error`` message as a ``LaunchError``, its text made safe to print."""
    try:
        code = int(message.get("exit_code", 125))
        errno = int(message.get("errno", 0)) or None
    except (TypeError, ValueError):
        code, errno = 125, None
    return LaunchError(
        printable(message.get("message", "unknown error")),
        exit_code=code,
        container=container,
        step=printable(message.get("step", step), 40),
        errno=errno,
    )

"""Stage2 and PID 1 of the set-up (runc's ``runc init``), forked by the monitor.

stage2 enters the user namespace (the monitor writes the id maps) and the others,
then forks the container's PID 1, which runs the plan's steps and execs. The
message table is in ``_sync``; the process that forks stage2 is ``_monitor``.

Only the standard library and the ``_linux`` helpers are imported (no pydantic, no
netlink): this is part of every container's start latency, and nothing can be
imported after pivot_root.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import termios
from collections.abc import Callable
from typing import Any, NoReturn

from codex32._linux import bpf, caps, mounts, process, pty, syscalls
from codex32._linux.paths import open_beneath
from codex32._runtime import faults as _faults
from codex32._runtime import protocol as _sync
from codex32._runtime.protocol import Message

_EXEC_EXIT_CODES = {errno.ENOENT: 127, errno.EACCES: 126, errno.ENOEXEC: 126, errno.EISDIR: 126}


class StepError(Exception):
    """A plan step that failed; carries what the engine needs to report it."""

    def __init__(self, step: str, err: int, message: str, exit_code: int = 125) -> None:
        super().__init__(message)
        self.step = step
        self.errno = err
        self.message = message
        self.exit_code = exit_code


class Setup:
    """Runs a plan's steps inside PID 1, in order, ending in exec."""

    def __init__(self, plan: dict[str, Any], sock: socket.socket | None = None) -> None:
        self.plan = plan
        self.sock = sock  # to the monitor: the console step sends its terminal there
        self.root_fd = -1
        self.identity: process.Identity | None = None
        # Read before pivot_root: afterwards the host's files are out of reach.
        self.seccomp_program = b""
        for step in plan["steps"]:
            if step["op"] == "seccomp":
                with open(step["program"], "rb") as f:
                    self.seccomp_program = f.read()

    def run(self) -> NoReturn:
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "unshare": self._unshare,
            "propagation": lambda s: mounts.make_private(),
            "overlay": self._overlay,
            "bind": self._bind,
            "proc": lambda s: mounts.proc(self.root_fd, s["target"]),
            "sysfs": lambda s: mounts.sysfs(self.root_fd, s["target"], s["read_only"]),
            "dev": lambda s: mounts.dev(self.root_fd, s["target"], s["mqueue"]),
            "tmpfs": lambda s: mounts.tmpfs(
                self.root_fd, s["target"], s["size"], s["mode"], s["flags"]
            ),
            "mask": lambda s: mounts.mask(self.root_fd, s["paths"]),
            "readonly_paths": lambda s: mounts.readonly_paths(self.root_fd, s["paths"]),
            "mkdir": self._mkdir,
            "pivot_root": self._pivot_root,
            "console": self._console,
            "remount_root": lambda s: mounts.remount_root_read_only(),
            "loopback_up": lambda s: process.loopback_up(),
            "hostname": lambda s: syscalls.sethostname(s["name"]),
            "rlimits": lambda s: process.set_rlimits(s["limits"]),
            "bounding_set": lambda s: caps.drop_bounding_set(s["keep"]),
            "user": self._user,
            "capabilities": lambda s: caps.set_capabilities(s["keep"]),
            "no_new_privs": lambda s: caps.set_no_new_privs(),
            "seccomp": self._seccomp,
        }
        for step in self.plan["steps"]:
            op = step["op"]
            if op == "exec":
                self._exec(step)
            try:
                handlers[op](step)
            except StepError:
                raise
            except OSError as exc:
                detail = f": {exc.filename}" if exc.filename else ""
                raise StepError(op, exc.errno or 0, f"{exc.strerror or exc}{detail}") from exc
            except Exception as exc:
                raise StepError(op, 0, f"{type(exc).__name__}: {exc}") from exc
        raise StepError("exec", 0, "the plan has no exec step")

    def _console(self, step: dict[str, Any]) -> None:
        """``-t``: a terminal of the container's own devpts as stdio and controlling
        terminal; its master goes to the monitor, which relays and logs it."""
        if self.sock is None:
            raise StepError("console", 0, "no monitor to hand the terminal to")
        master, slave = pty.open_pty(step["ptmx"])
        try:
            os.setsid()  # a session of its own, so that the terminal can be its own
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            _sync.send_with_fd(self.sock, {"type": "console"}, master)
        finally:
            os.close(slave)
            os.close(master)
        reply = _sync.receive(self.sock)
        if not reply or reply.get("type") != "console_done":
            raise StepError("console", 0, "the monitor did not take the terminal")

    def _unshare(self, step: dict[str, Any]) -> None:
        flags = 0
        for name in step["namespaces"]:
            flags |= syscalls.NAMESPACE_FLAGS[name]
        syscalls.unshare(flags)

    def _overlay(self, step: dict[str, Any]) -> None:
        mounts.overlay(
            step["lower"],
            step["upper"],
            step["work"],
            step["target"],
            step["userxattr"],
            step.get("lower_base"),
        )
        self.root_fd = os.open(step["target"], os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def _bind(self, step: dict[str, Any]) -> None:
        try:
            mounts.bind(self.root_fd, step["source"], step["target"], step["read_only"])
        except FileNotFoundError:
            if not step["optional"]:
                raise
        except OSError as exc:
            what = step.get("what", "bind")
            raise StepError(
                "bind",
                exc.errno or 0,
                f"{what} {step['source']} -> {step['target']}: {exc.strerror}",
            ) from exc

    def _mkdir(self, step: dict[str, Any]) -> None:
        os.close(open_beneath(self.root_fd, step["target"], create="dir"))

    def _pivot_root(self, step: dict[str, Any]) -> None:
        mounts.enter_root(step["rootfs"])
        os.close(self.root_fd)
        self.root_fd = -1

    def _user(self, step: dict[str, Any]) -> None:
        self.identity = process.resolve_user(step["user"])
        # A terminal on stdio becomes the user's (group kept), as runc's
        # fixStdioPermissions: otherwise a non-root user cannot reopen it by name.
        for fd in (0, 1, 2):
            if os.isatty(fd):
                try:
                    os.fchown(fd, self.identity.uid, -1)
                except OSError as exc:  # owner or group not mapped here: leave it (runc's)
                    if exc.errno not in (errno.EPERM, errno.EINVAL):
                        raise
        process.switch_user(self.identity)

    def _seccomp(self, step: dict[str, Any]) -> None:
        bpf.load_bpf(self.seccomp_program)

    def _exec(self, step: dict[str, Any]) -> NoReturn:
        env = dict(item.split("=", 1) for item in step["env"])
        if "HOME" not in env:
            env["HOME"] = self.identity.home if self.identity else "/"
        try:
            os.chdir(step["cwd"])
        except OSError as exc:
            raise StepError(
                "cwd", exc.errno or 0, f"chdir to {step['cwd']}: {exc.strerror}"
            ) from exc
        args: list[str] = step["args"]
        if not args:
            raise StepError("exec", 0, "no command given and the template has none", 125)
        try:
            executable = process.find_executable(args[0], env.get("PATH", ""))
            process.reset_signals()
            if step["init"]:
                os.execve(step["init"], [step["init"], "--", *args], env)
            os.execve(executable, args, env)
        except OSError as exc:
            code = _EXEC_EXIT_CODES.get(exc.errno or 0, 126)
            message = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
            if not message.startswith("exec:"):
                message = f'exec: "{args[0]}": {exc.strerror}'
            raise StepError("exec", exc.errno or 0, message, code) from exc


def _pid1(plan: dict[str, Any], sock: socket.socket) -> NoReturn:
    """PID 1 of the new pid namespace: wait for the go-ahead, set up, exec.

    A pooled sandbox's PID 1 (made before any container asked for it) learns its
    plan from the go-ahead, which brings its stdio along: until then it holds
    /dev/null and nothing of any container.
    """
    try:
        message, fds = _sync.receive_with_fds(sock)
        if message and message.get("type") == "claimed":
            # A sandbox's: named as a fresh PID 1 is (after its container's monitor).
            caps.set_process_name(str(message.get("process_name", "")))
            message, fds = _sync.receive_with_fds(sock)
        if not message or message.get("type") != "proceed":
            os._exit(125)
        if "plan" in message:
            plan = message["plan"]
            _adopt_stdio(fds)
        else:
            for fd in fds:
                os.close(fd)
        _faults.point("pid1.proceed")  # before pivot_root: the fault directory is in reach
        Setup(plan, sock).run()
    except StepError as exc:
        _report(sock, _sync.error_message(exc.step, exc.errno, exc.message, exc.exit_code))
        os._exit(exc.exit_code)
    except BaseException as exc:
        _report(sock, _sync.error_message("setup", 0, f"{type(exc).__name__}: {exc}"))
        os._exit(125)


def _adopt_stdio(fds: list[int]) -> None:
    """Make the three descriptors the go-ahead carried our stdin, stdout and stderr."""
    if len(fds) != 3:
        raise StepError("stdio", 0, f"{len(fds)} descriptors came with the go-ahead, not 3")
    _sync.adopt_stdio(fds)


def _report(sock: socket.socket, message: Message) -> None:
    with contextlib.suppress(OSError):
        _sync.send(sock, message)


def _fork_pid1(plan: dict[str, Any]) -> tuple[int, bool]:
    """Fork PID 1: straight into its cgroup when the engine sent one (v2) and we may
    (not from inside a user namespace, whose root may not write the host's
    ``cgroup.procs``); else a plain fork, and the engine moves it. (pid, in_cgroup)."""
    cgroup_fd = plan.get("cgroup_fd")
    pid, in_cgroup = -1, False
    if isinstance(cgroup_fd, int) and "user" not in plan["namespaces"]:
        try:
            pid, in_cgroup = syscalls.fork_into_cgroup(cgroup_fd), True
        except OSError:
            pid = -1
    if pid < 0:
        pid = os.fork()
    if pid == 0 and isinstance(cgroup_fd, int):
        os.close(cgroup_fd)  # a host cgroup directory: nothing of PID 1's to keep
    return pid, in_cgroup


def stage2(plan: dict[str, Any], sock: socket.socket) -> NoReturn:
    """Enter the user namespace (if any), then the others, and fork PID 1."""
    step = "namespaces"
    try:
        namespaces = plan["namespaces"]
        if "user" in namespaces:
            step = "userns"
            syscalls.unshare(syscalls.CLONE_NEWUSER)
            _sync.send(sock, {"type": "map_request"})
            reply = _sync.receive(sock)
            if not reply or reply.get("type") != "map_done":
                os._exit(125)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            step = "namespaces"
        flags = 0
        for name in namespaces:
            if name != "user":
                flags |= syscalls.NAMESPACE_FLAGS[name]
        syscalls.unshare(flags)
        _faults.point("stage2.namespaces")
        pid, in_cgroup = _fork_pid1(plan)
        if pid == 0:
            _pid1(plan, sock)
        # PID 1 as a pidfd: the monitor reads its pid from the kernel, not from us.
        pidfd = os.pidfd_open(pid)
        _sync.send_with_fd(sock, {"type": "pid", "in_cgroup": in_cgroup}, pidfd)
        os._exit(0)
    except OSError as exc:
        _report(sock, _sync.error_message(step, exc.errno or 0, exc.strerror or str(exc)))
        os._exit(125)
    except BaseException as exc:
        _report(sock, _sync.error_message(step, 0, f"{type(exc).__name__}: {exc}"))
        os._exit(125)

"""Timestamps from inside a container start, without editing the engine.

Two uses:

* in the bench process, ``Tracer.instrument_engine()`` wraps the engine's functions
  (create, launch, the sync messages, cgroup placement, state writes) and makes the
  engine start its helper processes as ``python -S -m bench.probe codex32.X ...``;
* that command (``main`` below) records when the interpreter came up, imports the
  engine module it stands in for, wraps the monitor's and the set-up process's
  functions (daemonize, stage2, unshare, each mount, pivot_root, capabilities,
  seccomp, execve...) and then runs the module's ``main()``.

Every event is one line appended to the file named by ``C32BENCH_TRACE``:
``pid monotonic_ns depth kind label`` (kind B/E: a call's begin and end, I: an
instant). ``time.monotonic_ns`` is CLOCK_MONOTONIC, the same in every process, so
the engine's and the container's events line up. A wrapped call costs about a
microsecond. Missing functions (the engine changes) are skipped, not errors.
"""

from __future__ import annotations

import time

T_START = time.monotonic_ns()  # as early as the module can: "the interpreter is up"

import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

TRACE_ENV = "C32BENCH_TRACE"

#: (module, attribute path) wrapped in the helper processes.
CHILD_TARGETS: tuple[tuple[str, str], ...] = (
    ("codex32._runtime.monitor", "_daemonize"),
    ("codex32._runtime.monitor", "serve"),
    ("codex32._runtime.monitor", "stage2"),
    ("codex32._runtime.monitor", "_write_maps"),
    ("codex32._runtime.monitor", "_reap"),
    ("codex32._runtime.monitor", "Monitor.start"),
    ("codex32._runtime.monitor", "Monitor._record_start"),
    ("codex32._runtime.monitor", "Monitor.supervise"),
    ("codex32._runtime.monitor", "Monitor.finish"),
    ("codex32._runtime.monitor", "Monitor._wait_for_engine_to_let_go"),
    ("codex32._network.endpoint", "EndpointFiles.release"),
    ("codex32._runtime.forkserver", "_child"),
    ("codex32._runtime.init", "Setup.__init__"),
    ("codex32._runtime.init", "Setup.run"),
    ("codex32._runtime.init", "Setup._unshare"),
    ("codex32._runtime.init", "Setup._overlay"),
    ("codex32._runtime.init", "Setup._bind"),
    ("codex32._runtime.init", "Setup._mkdir"),
    ("codex32._runtime.init", "Setup._pivot_root"),
    ("codex32._runtime.init", "Setup._user"),
    ("codex32._runtime.init", "Setup._seccomp"),
    ("codex32._runtime.init", "Setup._exec"),
    ("codex32._linux.syscalls", "unshare"),
    ("codex32._linux.syscalls", "sethostname"),
    ("codex32._linux.caps", "set_child_subreaper"),
    ("codex32._linux.caps", "set_process_name"),
    ("codex32._linux.caps", "drop_bounding_set"),
    ("codex32._linux.caps", "set_capabilities"),
    ("codex32._linux.caps", "set_no_new_privs"),
    ("codex32._linux.bpf", "load_bpf"),
    ("codex32._linux.process", "loopback_up"),
    ("codex32._linux.process", "set_rlimits"),
    ("codex32._linux.process", "resolve_user"),
    ("codex32._linux.process", "switch_user"),
    ("codex32._linux.process", "find_executable"),
    ("codex32._linux.mounts", "make_private"),
    ("codex32._linux.mounts", "overlay"),
    ("codex32._linux.mounts", "bind"),
    ("codex32._linux.mounts", "proc"),
    ("codex32._linux.mounts", "sysfs"),
    ("codex32._linux.mounts", "tmpfs"),
    ("codex32._linux.mounts", "dev"),
    ("codex32._linux.mounts", "mask"),
    ("codex32._linux.mounts", "readonly_paths"),
    ("codex32._linux.mounts", "enter_root"),
    ("codex32._linux.mounts", "remount_root_read_only"),
    ("codex32._store.state", "StateStore.update"),
    ("codex32._store.events", "append_event"),
)

#: Wrapped in the bench process (the engine side).
ENGINE_TARGETS: tuple[tuple[str, str], ...] = (
    ("codex32._engine.engine", "ContainerEngine._create"),
    ("codex32._engine.engine", "ContainerEngine._launch"),
    ("codex32._engine.engine", "ContainerEngine._run_attached"),
    ("codex32._engine.engine", "ContainerEngine._wait_removed"),
    ("codex32._runtime.launch", "Launch.start"),
    ("codex32._runtime.launch", "Launch.wait"),
    ("codex32._runtime.launch", "Launch.detach"),
    ("codex32._runtime.launch", "ForkServer.spawn"),
    ("codex32._cgroups.containers", "ContainerCgroups.prepare"),
    ("codex32._cgroups.containers", "ContainerCgroups.place"),
    ("codex32._store.state", "StateStore.update"),
    ("codex32._store.state", "StateStore.save"),
    ("codex32._store.logs", "read_logs"),
    ("codex32._network.manager", "Networking.prepare"),
    ("codex32._network.manager", "Networking.attach"),
    ("codex32._network.manager", "Networking._apply_nat"),
    ("codex32._network.manager", "Networking.release"),
    ("codex32._linux.netlink", "ensure_bridge"),
    ("codex32._linux.netlink", "attach_container"),
    ("codex32._cgroups.v1", "V1Driver.open"),
    ("codex32._cgroups.v1", "V1Driver.create"),
    ("codex32._cgroups.v1", "V1Cgroup.add_pid"),
    ("codex32._cgroups.v2", "V2Driver.open"),
    ("codex32._cgroups.v2", "V2Driver.create"),
    ("codex32._cgroups.v2", "V2Cgroup.add_pid"),
)

HELPER_MODULES = (
    "codex32._runtime.monitor",
    "codex32._runtime.forkserver",
    "codex32._runtime.exec",
    "codex32._runtime.export",
)


class Tracer:
    """Appends events to the trace file; wraps functions to emit them."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.depth = 0
        self.wrapped: list[tuple[Any, str, Any]] = []

    def emit(self, kind: str, label: str, when: int | None = None) -> None:
        now = time.monotonic_ns() if when is None else when
        line = f"{os.getpid()} {now} {self.depth} {kind} {label}\n"
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode())

    def wrap(self, owner: Any, name: str, label: str) -> bool:
        original = getattr(owner, name, None)
        if original is None or not callable(original):
            return False
        tracer = self

        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tracer.emit("B", label)
            tracer.depth += 1
            try:
                return original(*args, **kwargs)
            finally:
                tracer.depth -= 1
                tracer.emit("E", label)

        setattr(owner, name, wrapper)
        self.wrapped.append((owner, name, original))
        return True

    def wrap_targets(self, targets: tuple[tuple[str, str], ...]) -> None:
        for module_name, path in targets:
            try:
                owner: Any = importlib.import_module(module_name)
            except ImportError:
                continue
            *parents, name = path.split(".")
            for part in parents:
                owner = getattr(owner, part, None)
            if owner is not None:
                short = module_name.rsplit(".", 1)[-1]
                self.wrap(owner, name, path if parents else f"{short}.{name}")

    def wrap_sync(self) -> None:
        """Instants for every sync message, labelled with its type."""
        try:
            sync: Any = importlib.import_module("codex32._runtime.protocol")
        except ImportError:
            return
        send, receive = sync.send, sync.receive
        tracer = self

        def traced_send(sock: Any, message: dict[str, Any]) -> None:
            tracer.emit("I", f"send:{message.get('type')}")
            send(sock, message)

        def traced_receive(sock: Any) -> Any:
            message = receive(sock)
            kind = "EOF" if message is None else message.get("type")
            tracer.emit("I", f"recv:{kind}")
            return message

        sync.send, sync.receive = traced_send, traced_receive
        self.wrapped += [(sync, "send", send), (sync, "receive", receive)]
        receive_with_fds = getattr(sync, "receive_with_fds", None)
        if receive_with_fds is not None:  # the monitor's wait for PID 1's outcome

            def traced_receive_with_fds(sock: Any) -> Any:
                message, fds = receive_with_fds(sock)
                kind = "EOF" if message is None else message.get("type")
                tracer.emit("I", f"recv:{kind}")
                return message, fds

            sync.receive_with_fds = traced_receive_with_fds
            self.wrapped.append((sync, "receive_with_fds", receive_with_fds))

    def wrap_fsync(self) -> None:
        self.wrap(os, "fsync", "os.fsync")

    def wrap_os(self) -> None:
        """fork (both sides), execve, subprocess.run: only in the helper processes."""
        fork, execve = os.fork, os.execve
        tracer = self

        def traced_fork() -> int:
            tracer.emit("I", "fork")
            pid = fork()
            tracer.emit("I", "fork:child" if pid == 0 else "fork:parent")
            return pid

        def traced_execve(path: Any, args: Any, env: Any) -> Any:
            tracer.emit("I", f"execve:{os.fsdecode(path)}")
            return execve(path, args, env)

        os.fork = traced_fork
        os.execve = traced_execve  # type: ignore[assignment]

        import subprocess

        run = subprocess.run

        def traced_run(args: Any, *rest: Any, **kwargs: Any) -> Any:
            argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
            what = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else os.path.basename(argv[0])
            tracer.emit("B", f"subprocess:{what}")
            try:
                return run(args, *rest, **kwargs)
            finally:
                tracer.emit("E", f"subprocess:{what}")

        subprocess.run = traced_run

    def restore(self) -> None:
        for owner, name, original in reversed(self.wrapped):
            setattr(owner, name, original)
        self.wrapped.clear()

    def close(self) -> None:
        self.restore()
        os.close(self.fd)


def helper_argv(argv: list[str]) -> list[str]:
    """``[python, -S, -m, codex32.X, ...]`` -> the same under the probe."""
    if len(argv) >= 4 and argv[1:3] == ["-S", "-m"] and argv[3] in HELPER_MODULES:
        return [argv[0], "-S", "-m", "bench.probe", *argv[3:]]
    return argv


def main() -> int:
    """``python -S -m bench.probe codex32.X ARGS...``: run codex32.X's main, traced."""
    tracer = Tracer(os.environ[TRACE_ENV])
    tracer.emit("I", "interpreter_ready", T_START)
    target = sys.argv[1]
    tracer.emit("B", f"import:{target}")
    module: Any = importlib.import_module(target)
    tracer.emit("E", f"import:{target}")
    tracer.wrap_sync()
    tracer.wrap_os()
    tracer.wrap_fsync()
    tracer.wrap_targets(CHILD_TARGETS)
    sys.argv = [target, *sys.argv[2:]]
    entry: Callable[[], int] = module.main
    return entry()


if __name__ == "__main__":
    sys.exit(main())

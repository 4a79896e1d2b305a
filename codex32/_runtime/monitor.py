"""The container monitor (Podman's conmon): stage1 of the set-up process.

It starts the container (forking stage2, writing id maps, relaying the engine's
go-ahead), then stays as its parent for its whole life, detached from whoever
started it: it reaps PID 1, writes the container's stdout/stderr to its log
(Docker's json-file format, rotated), records the exit in state.json, appends the
``start``/``oom``/``die``/``destroy`` events (``oom`` as each OOM kill happens), removes
``--rm`` containers and applies the restart policy. It imports the standard library
and small codex32 modules only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import selectors
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codex32._cgroups.final import final_figures, remove_cgroup
from codex32._cgroups.oom import OomWatch, oom_kill_count
from codex32._linux.caps import set_child_subreaper, set_process_name
from codex32._linux.process import pid_of_pidfd
from codex32._linux.pty import copy_window_size, write_all
from codex32._runtime import faults as _faults
from codex32._runtime import protocol as _sync
from codex32._runtime.init import stage2
from codex32._store.events import Event, append_event
from codex32._store.logs import LogWriter
from codex32._store.state import (
    ContainerRecord,
    ContainerState,
    StateStore,
    process_start_time,
)
from codex32.errors import Codex32Error

_BACKOFF_START = 0.1
_BACKOFF_MAX = 60.0
_BACKOFF_RESET_AFTER = 10.0  # a run this long resets the back-off, as Docker does
_REMOVAL_CHECK = 0.25  # how often a backing-off monitor looks whether rm took its container


@dataclass(frozen=True)
class MonitorConfig:
    """What the engine tells the monitor besides the plan."""

    container_id: str
    name: str
    storage_dir: str
    attach: bool
    tty: bool
    log_max_size: int | None
    log_max_files: int
    auto_remove: bool
    restart_policy: str
    restart_max: int
    # The engine's settings (Settings.to_env): a restart is started with the same ones.
    engine_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> MonitorConfig:
        return cls(**data)


def _write_maps(pid: int, plan: dict[str, Any]) -> None:
    for kind, key in (("uid_map", "uid_mappings"), ("gid_map", "gid_mappings")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in plan[key])
        with open(f"/proc/{pid}/{kind}", "w") as f:
            f.write(lines)


def _reap(pid: int) -> int:
    """waitpid, retried on EINTR; 0 if it is not our child any more."""
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def _kill_and_reap(pid: int | None) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)


def _exit_code(status: int) -> tuple[int, int]:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return 128 + sig, sig
    return os.WEXITSTATUS(status), 0


def _paths(value: object) -> dict[str, str]:
    """The cgroup paths the engine's go-ahead carries ({} without a cgroup)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items() if isinstance(v, str)}


def make_namespaces(
    plan: dict[str, Any],
    out_w: int,
    err_w: int,
    *,
    tty: bool,
    host_terminal: bool,
    closing: list[socket.socket | int | None],
) -> tuple[socket.socket, int, bool] | _sync.Message:
    """Fork stage2, which enters the plan's namespaces (the id maps written from here)
    and forks PID 1; return the socket to PID 1, its pid and whether it was forked
    into its cgroup (the plan's ``cgroup_fd``, v2), or the error to report.

    ``out_w``/``err_w`` become stage2's (so PID 1's) stdout and stderr and are closed
    here; ``-t`` makes ``out_w`` stdin too (``host_terminal``: a host pty to make the
    controlling terminal). ``closing``: what of ours the child must not keep.
    """
    ours, theirs = _sync.socket_pair()
    stage2_pid = os.fork()
    if stage2_pid == 0:
        ours.close()
        for item in closing:
            if isinstance(item, socket.socket):
                item.close()
        if tty:
            if host_terminal:
                os.setsid()
                fcntl.ioctl(out_w, termios.TIOCSCTTY, 0)
            os.dup2(out_w, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        ours_fds = {out_w, err_w} | {fd for fd in closing if isinstance(fd, int)}
        for fd in ours_fds - {0, 1, 2}:
            os.close(fd)
        stage2(plan, theirs)
    theirs.close()
    os.close(out_w)
    if err_w != out_w:
        os.close(err_w)
    pid1: int | None = None
    in_cgroup = False
    try:
        while pid1 is None:
            message, fds = _sync.receive_with_fds(ours)
            try:  # PID 1 comes as a pidfd: its pid is the kernel's word, not a number sent
                if message and message.get("type") == "pid" and len(fds) == 1:
                    pid1 = pid_of_pidfd(fds[0])
                    in_cgroup = message.get("in_cgroup") is True
            finally:
                for fd in fds:
                    os.close(fd)
            if message is None:
                ours.close()
                return _sync.error_message("namespaces", 0, "set-up process died")
            kind = message.get("type")
            if kind == "map_request":
                try:
                    _write_maps(stage2_pid, plan)
                except OSError as exc:
                    ours.close()
                    return _sync.error_message("uid_map", exc.errno or 0, str(exc))
                _sync.send(ours, {"type": "map_done"})
            elif kind != "pid" or pid1 is None:
                ours.close()
                return message
        _reap(stage2_pid)
        stage2_pid = 0
        return ours, pid1, in_cgroup
    except BaseException:
        _kill_and_reap(pid1)
        ours.close()
        raise
    finally:
        if stage2_pid:
            _kill_and_reap(stage2_pid)


class Monitor:
    """One container's supervisor."""

    def __init__(
        self,
        plan: dict[str, Any],
        config: MonitorConfig,
        engine: socket.socket,
        cgroup_fd: int | None = None,
    ):
        self.plan = plan
        self.cgroup_fd = cgroup_fd  # the container's cgroup (v2), to fork PID 1 into
        self.in_cgroup = False  # PID 1 was forked into it: the engine need not move it
        self.config = config
        self.engine: socket.socket | None = engine
        self.store = StateStore(Path(config.storage_dir))
        self.directory = self.store.directory(config.container_id)
        self.events_path = Path(config.storage_dir) / "events.jsonl"
        self.pid1: int | None = None
        self.cgroup_paths: dict[str, str] = {}
        self.oom_baseline = 0
        self.oom_reported = 0  # the counter's value up to which ``oom`` events were appended
        self.started_at = 0.0

    # -- talking to the engine (which may go away at any time) ------------------

    def _tell(self, message: _sync.Message) -> None:
        if self.engine is None:
            return
        try:
            _sync.send(self.engine, message)
        except OSError:
            self._forget_engine()

    def _forget_engine(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _event(self, action: str, **attributes: str) -> None:
        event = Event(
            time=time.time(),
            type="container",
            action=action,
            id=self.config.container_id,
            name=self.config.name,
            attributes=attributes,
        )
        with contextlib.suppress(OSError):
            append_event(self.events_path, event)

    # -- start -----------------------------------------------------------------

    def _console_from_pid1(self) -> bool:
        """PID 1 makes its terminal from its own devpts (plans made before it could not)."""
        return any(step.get("op") == "console" for step in self.plan.get("steps", []))

    def _stdio(self) -> tuple[int, int, int | None, int | None]:
        """The container's (stdout, stderr) write ends and the monitor's read ends."""
        if self.config.tty:
            if self._console_from_pid1():  # the read end comes with the console message
                null = os.open(os.devnull, os.O_RDWR)
                return null, null, None, None
            master, slave = os.openpty()
            copy_window_size(1, master)
            return slave, slave, master, None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        return out_w, err_w, out_r, err_r

    def start(self) -> bool:
        """Run the launch handshake; True once the container's command is running."""
        out_w, err_w, self.out_r, self.err_r = self._stdio()
        plan = self.plan if self.cgroup_fd is None else {**self.plan, "cgroup_fd": self.cgroup_fd}
        try:
            made = make_namespaces(
                plan,
                out_w,
                err_w,
                tty=self.config.tty,
                host_terminal=self.config.tty and self.out_r is not None,
                closing=[self.engine, self.out_r, self.err_r],
            )
        finally:
            if self.cgroup_fd is not None:
                os.close(self.cgroup_fd)
                self.cgroup_fd = None
        if isinstance(made, dict):
            self._tell(made)
            return False
        ours, self.pid1, self.in_cgroup = made
        return self._go(ours, {"type": "proceed"}, [])

    def start_claimed(self, ours: socket.socket) -> bool:
        """Start the container in a pooled sandbox whose PID 1 (``self.pid1``) waits on
        ``ours``: the go-ahead brings it the plan and its stdio, as ``start``'s fork would
        have given them (``-t``: the console step makes its terminal)."""
        name = f"c32mon-{self.config.container_id[:8]}"
        try:
            _sync.send(ours, {"type": "claimed", "process_name": name})
        except OSError:  # PID 1 died while pooled: the start fails as a set-up death
            ours.close()
            _kill_and_reap(self.pid1)
            self.pid1 = None
            self._tell(_sync.error_message("namespaces", 0, "set-up process died"))
            return False
        out_w, err_w, self.out_r, self.err_r = self._stdio()
        try:
            stdin = out_w if self.config.tty else 0
            proceed = {"type": "proceed", "plan": self.plan}
            return self._go(ours, proceed, [stdin, out_w, err_w])
        finally:
            for fd in {out_w, err_w} - {0, 1, 2}:
                os.close(fd)

    def _go(self, ours: socket.socket, proceed: _sync.Message, fds: list[int]) -> bool:
        """Tell the engine PID 1 exists, relay its go-ahead, report how the exec went."""
        assert self.pid1 is not None
        pid1 = self.pid1
        try:
            _faults.point("monitor.created")
            self._tell({"type": "created", "pid": self.pid1, "in_cgroup": self.in_cgroup})
            reply = _sync.receive(self.engine) if self.engine else None
            if not reply or reply.get("type") != "proceed":
                _kill_and_reap(self.pid1)
                self.pid1 = None
                return False
            self.cgroup_paths = _paths(reply.get("cgroup_paths"))
            _sync.send_with_fds(ours, proceed, fds)
            outcome = self._outcome(ours)
            if outcome is not None:
                self._tell(outcome)
                _reap(pid1)
                self.pid1 = None
                return False
            self._record_start()
            _faults.point("monitor.started")
            self._tell({"type": "started", "pid": self.pid1})
            return True
        except BaseException:
            _kill_and_reap(self.pid1)
            self.pid1 = None
            raise
        finally:
            ours.close()

    def _outcome(self, sock: socket.socket) -> _sync.Message | None:
        """PID 1's error, or None once it has exec'd; takes its terminal on the way."""
        while True:
            message, fds = _sync.receive_with_fds(sock)
            if message is None or message.get("type") != "console":
                for fd in fds:
                    os.close(fd)
                return message
            if not fds:
                return _sync.error_message("console", 0, "no terminal came with the console")
            self.out_r = fds[0]
            for fd in fds[1:]:
                os.close(fd)
            copy_window_size(1, self.out_r)
            _sync.send(sock, {"type": "console_done"})

    def _record_start(self) -> None:
        assert self.pid1 is not None
        pid = self.pid1
        started = time.time()
        paths = self.cgroup_paths

        def change(record: ContainerRecord) -> None:
            record.status = ContainerState.RUNNING
            record.cgroup_paths = dict(paths)
            record.pid = pid
            record.pid_start_time = process_start_time(pid)
            record.monitor_pid = os.getpid()
            record.monitor_start_time = process_start_time(os.getpid())
            record.started_at = started
            record.finished_at = None
            record.exit_code = None
            record.signal = 0
            record.error = None
            record.oom_killed = False
            record.memory_peak_bytes = record.cpu_usage_ns = None
            record.oom_kills = 0
            record.died_unseen = False
            record.keep_after_exit = False

        self.store.update(self.config.container_id, change)
        self.started_at = started
        self.oom_baseline = self.oom_reported = oom_kill_count(self.cgroup_paths)
        self._event("start")

    # -- run -------------------------------------------------------------------

    def supervise(self) -> int:
        """Copy output into the log until PID 1 exits; return its wait status.

        Meanwhile each OOM kill in the container (a child's, with PID 1 alive) is
        reported when the kernel signals it, as Docker's ``oom`` event is.
        """
        assert self.pid1 is not None
        log = LogWriter(
            self.directory / "container.log", self.config.log_max_size, self.config.log_max_files
        )
        selector = selectors.DefaultSelector()
        pidfd = os.pidfd_open(self.pid1)
        selector.register(pidfd, selectors.EVENT_READ, "exit")
        streams = {self.out_r: "stdout", self.err_r: "stderr"}
        for fd, stream in streams.items():
            if fd is not None:
                selector.register(fd, selectors.EVENT_READ, stream)
        if self.engine is not None:
            selector.register(self.engine, selectors.EVENT_READ, "engine")
        if self.config.attach and self.config.tty:
            with contextlib.suppress(OSError, ValueError):
                selector.register(0, selectors.EVENT_READ, "stdin")
        oom = OomWatch.open(self.cgroup_paths)
        if oom is not None:
            selector.register(oom.fileno(), selectors.EVENT_READ, "oom")
            self._report_oom(oom_kill_count(self.cgroup_paths))  # one before we watched
        open_streams = {s for fd, s in streams.items() if fd is not None}
        status: int | None = None
        try:
            while status is None or open_streams:
                timeout = 2.0 if status is not None else (oom.timeout() if oom else None)
                ready = selector.select(timeout)
                if oom is not None:
                    notified = any(key.data == "oom" for key, _ in ready)
                    count = oom.count(notified)
                    if count is not None:
                        self._report_oom(count)
                    elif notified:  # the cgroup is gone: a v2 fd would poll ready for ever
                        _unwatch(selector, oom)
                        oom = None
                if not ready and status is not None:
                    break  # a descendant outside the pid namespace holds the pipe open
                for key, _ in ready:
                    what = key.data
                    if what == "oom":
                        continue
                    if what == "exit":
                        status = _reap(self.pid1)
                        selector.unregister(pidfd)
                        _unwatch(selector, oom)  # ``finish`` reports what is left
                        oom = None
                    elif what == "engine":
                        if not self._engine_alive():
                            selector.unregister(key.fileobj)
                            self._forget_engine()
                    elif what == "stdin":
                        self._pump_stdin(selector)
                    elif not self._pump_output(key.fd, what, log):
                        selector.unregister(key.fd)
                        open_streams.discard(what)
        finally:
            log.close()
            os.close(pidfd)
            if oom is not None:
                oom.close()
            selector.close()
        return status if status is not None else 0

    def _report_oom(self, count: int) -> None:
        """An ``oom`` event for each kill the counter shows that none was appended for;
        ``OOMKilled`` is set at once, as Docker's ``inspect`` shows it on a running
        container."""
        if count > self.oom_reported and self.pid1 is not None:

            def mark(record: ContainerRecord) -> None:
                record.oom_killed = True

            with contextlib.suppress(OSError, Codex32Error):
                self.store.update(self.config.container_id, mark)
        for _ in range(count - self.oom_reported):
            self._event("oom")
        self.oom_reported = max(self.oom_reported, count)

    def _engine_alive(self) -> bool:
        assert self.engine is not None
        try:
            return bool(self.engine.recv(1, socket.MSG_PEEK))
        except OSError:
            return False

    def _pump_output(self, fd: int, stream: str, log: LogWriter) -> bool:
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the pty's last holder closed it
            data = b""
        if not data:
            return False
        log.write(stream, data)
        if self.config.attach:
            target = 2 if stream == "stderr" else 1
            with contextlib.suppress(OSError):
                write_all(target, data)
        return True

    def _pump_stdin(self, selector: selectors.BaseSelector) -> None:
        data = b""
        with contextlib.suppress(OSError):
            data = os.read(0, 65536)
        if not data:
            selector.unregister(0)
            return
        if self.out_r is not None:
            with contextlib.suppress(OSError):
                write_all(self.out_r, data)

    # -- exit ------------------------------------------------------------------

    def finish(self, status: int) -> None:
        """Record the exit, tell the engine, then remove or restart as configured."""
        _faults.point("monitor.exited")
        code, sig = _exit_code(status)
        finished = time.time()
        count = max(oom_kill_count(self.cgroup_paths), self.oom_reported)
        oom = count > self.oom_baseline  # any kill since the start, as Docker's OOMKilled
        figures = final_figures(self.cgroup_paths)

        def change(record: ContainerRecord) -> None:
            record.status = ContainerState.EXITED
            record.exit_code = code
            record.signal = sig
            record.finished_at = finished
            record.oom_killed = oom
            record.oom_kills = count - self.oom_baseline
            record.memory_peak_bytes = figures.memory_peak_bytes
            record.cpu_usage_ns = figures.cpu_usage_ns

        try:
            record = self.store.update(self.config.container_id, change)
        except (OSError, Codex32Error):
            return  # removed meanwhile (rm --force): nothing left to record
        self._report_oom(count)  # kills not reported live (PID 1's own, often): once each
        self._event("die", exitCode=str(code))
        self._tell({"type": "exited", "exit_code": code, "signal": sig})
        _faults.point("monitor.recorded")
        remove_cgroup(self.cgroup_paths)  # its figures are in the record (Docker's, runc's)
        if self._should_restart(record, code, finished):
            self._restart(record, finished)
            return
        if self.config.auto_remove and not record.keep_after_exit:
            self._wait_for_engine_to_let_go()
            _faults.point("monitor.remove")
            network = None
            try:
                if (self.directory / "network.json").exists():  # lease, hosts, links
                    network = self._release_network(record.id)
            finally:
                with contextlib.suppress(OSError):
                    self.store.delete(record)
                self._event("destroy")
            if network is not None:  # the peers' hosts files: O(peers), after the removal
                self._refresh_peers(network)

    def _release_network(self, container_id: str) -> str | None:
        """Give back the endpoint; whatever fails is logged, and ``reconcile`` retries."""
        try:
            # Imported here: a monitor started as a fresh interpreter (the CLI's)
            # should not carry ipaddress, hashlib... for its whole life. The fork
            # server imports it up front, so forked monitors share it.
            from codex32._network.endpoint import EndpointFiles

            files = EndpointFiles(Path(self.config.storage_dir), self.store)
            return files.release(container_id, refresh=False)
        except Exception as exc:  # the removal goes on: a lease left is reconciled later
            print(f"codex32: network release of {container_id[:12]} failed: {exc}",
                  file=sys.stderr)  # fmt: skip
            return None

    def _refresh_peers(self, network: str) -> None:
        from codex32._network.endpoint import EndpointFiles

        try:
            EndpointFiles(Path(self.config.storage_dir), self.store).refresh_hosts(network)
        except Exception as exc:  # the next change of the network refreshes them
            print(f"codex32: hosts refresh of network {network} failed: {exc}",
                  file=sys.stderr)  # fmt: skip

    def _should_restart(self, record: ContainerRecord, code: int, finished: float) -> bool:
        policy = self.config.restart_policy
        if policy == "no" or record.stopped_by_user:
            return False
        if policy == "on-failure":
            if code == 0:
                return False
            return self.config.restart_max == 0 or record.restart_count < self.config.restart_max
        return policy in ("always", "unless-stopped")

    def _restart(self, record: ContainerRecord, finished: float) -> None:
        ran = finished - self.started_at
        count = 0 if ran >= _BACKOFF_RESET_AFTER else record.restart_count
        delay = min(_BACKOFF_START * (2**count), _BACKOFF_MAX)

        def change(r: ContainerRecord) -> None:
            if not r.stopped_by_user:
                r.status = ContainerState.RESTARTING

        if self.store.update(self.config.container_id, change).stopped_by_user:
            return
        self._forget_engine()
        if not self._back_off(delay):
            return  # removed meanwhile (rm -f): nothing left to restart

        def give_up(r: ContainerRecord) -> None:
            if r.status is ContainerState.RESTARTING:
                r.status = ContainerState.EXITED

        try:
            current = self.store.load(self.config.container_id)
        except (OSError, Codex32Error):
            return
        if current.stopped_by_user or current.status is not ContainerState.RESTARTING:
            self.store.update(self.config.container_id, give_up)
            return
        _faults.point("monitor.restart")
        with open(self.directory / "restart.log", "ab") as log:  # why a restart failed
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "codex32._engine.restart",
                    self.config.storage_dir,
                    record.id,
                ],
                env={**os.environ, **self.config.engine_env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=False,
            )
        if result.returncode != 0:
            with contextlib.suppress(OSError, Codex32Error):  # (removed meanwhile)
                self.store.update(self.config.container_id, give_up)

    def _back_off(self, delay: float) -> bool:
        """Wait out the restart back-off (up to a minute); False as soon as the container
        is removed meanwhile, so that its monitor does not linger that long for nothing."""
        deadline = time.monotonic() + delay
        state = self.directory / "state.json"
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, _REMOVAL_CHECK))
            if not state.exists():
                return False
        return True

    def _wait_for_engine_to_let_go(self) -> None:
        """An attached engine reads the log after the exit; wait until it hangs up."""
        if self.engine is None:
            return
        self.engine.settimeout(30)
        with contextlib.suppress(OSError):
            while self.engine.recv(4096):
                pass
        self._forget_engine()


def _unwatch(selector: selectors.BaseSelector, oom: OomWatch | None) -> None:
    """Stop watching for OOM kills (closing the v1 eventfd drops its registration)."""
    if oom is not None:
        selector.unregister(oom.fileno())
        oom.close()


def _daemonize() -> None:
    """Fork once more, so that the monitor is nobody's child but init's (as conmon)."""
    if os.fork() != 0:
        os._exit(0)


def serve(engine: socket.socket, *, daemonize: bool = True) -> int:
    """Receive the plan on ``engine``, daemonize, start and supervise the container.

    ``daemonize=False``: the caller is a fork server's child, which the server reaps;
    a second fork to leave the starter's process tree would only cost time.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    first, fds = _sync.receive_with_fds(engine)
    cgroup_fd = fds[0] if len(fds) == 1 and first and first.get("type") == "plan" else None
    for fd in fds:
        if fd == cgroup_fd:
            os.set_inheritable(fd, False)  # (received descriptors are inheritable)
        else:
            os.close(fd)
    if first and first.get("type") == "sandbox":
        if daemonize:
            _daemonize()
        return _serve_sandbox(engine, first["shape"])
    if not first or first.get("type") != "plan":
        return 125
    config = MonitorConfig.from_message(first["monitor"])
    if daemonize:
        _daemonize()
    set_child_subreaper()
    set_process_name(f"c32mon-{config.container_id[:8]}")
    _faults.point("monitor.plan")
    monitor = Monitor(first["plan"], config, engine, cgroup_fd)
    return _run(monitor, monitor.start)


def _run(monitor: Monitor, start: Callable[[], bool]) -> int:
    try:
        if not start():
            return 125
    except (OSError, Codex32Error) as exc:  # a full disk at the start's record, say
        monitor._tell(_sync.error_message("setup", getattr(exc, "errno", 0) or 0, str(exc)))
        return 125
    monitor.finish(monitor.supervise())
    return 0


def same_shape(plan: dict[str, Any], shape: dict[str, Any]) -> bool:
    """Whether a plan asks for exactly the namespaces and id maps a sandbox has."""
    return all(plan.get(key) == shape.get(key) for key in _sync.SHAPE_KEYS)


def _serve_sandbox(pool: socket.socket, shape: dict[str, Any]) -> int:
    """A pooled sandbox (``_runtime.sandbox``): make the namespaces and PID 1 now, wait
    for the container that claims them, then be its monitor as if freshly forked.

    A claim whose plan has another shape, or a hang-up, ends the sandbox: PID 1 is
    killed unused. Nothing of a container is here before its claim.
    """
    set_child_subreaper()
    set_process_name("c32pool")
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    out_w, err_w = os.dup(null), os.dup(null)
    os.close(null)
    plan = {**{key: shape[key] for key in _sync.SHAPE_KEYS}, "container": "", "steps": []}
    made = make_namespaces(plan, out_w, err_w, tty=False, host_terminal=False, closing=[pool])
    if isinstance(made, dict):
        with contextlib.suppress(OSError):
            _sync.send(pool, made)
        return 125
    ours, pid1, _in_cgroup = made
    claim: _sync.Message | None = None
    fds: list[int] = []
    try:
        _sync.send(pool, {"type": "ready", "pid": pid1})
        claim, fds = _sync.receive_with_fds(pool)
    except OSError:
        claim = None
    refusal = _claim_refusal(claim, fds, shape)
    if refusal is not None:
        for fd in fds:
            os.close(fd)
        _kill_and_reap(pid1)
        ours.close()
        if claim is not None:
            with contextlib.suppress(OSError):
                _sync.send(pool, _sync.error_message("claim", 0, refusal))
        return 125
    assert claim is not None
    _sync.adopt_stdio(fds)  # the claimant's stdio, as a spawn brings it
    config = MonitorConfig.from_message(claim["monitor"])
    set_process_name(f"c32mon-{config.container_id[:8]}")
    _faults.point("monitor.plan")
    monitor = Monitor(claim["plan"], config, pool)
    monitor.pid1 = pid1
    return _run(monitor, lambda: monitor.start_claimed(ours))


def _claim_refusal(
    claim: _sync.Message | None, fds: list[int], shape: dict[str, Any]
) -> str | None:
    """Why a claim cannot be served here, or None."""
    if claim is None:
        return "the pool hung up"
    if claim.get("type") != "claim" or len(fds) != 3:
        return "not a claim with three descriptors"
    plan = claim.get("plan")
    if not isinstance(plan, dict) or not same_shape(plan, shape):
        return "the plan's namespaces or id maps differ from the sandbox's"
    monitor = claim.get("monitor")
    steps = plan.get("steps", [])
    if not isinstance(monitor, dict) or not isinstance(steps, list):
        return "a malformed claim"
    if monitor.get("tty") and not any(step.get("op") == "console" for step in steps):
        return "a terminal made outside the container cannot be pooled"
    return None


def main() -> int:
    """Entry point of ``python -S -m codex32._runtime.monitor FD`` (see ``_sync``)."""
    return serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    sys.exit(main())

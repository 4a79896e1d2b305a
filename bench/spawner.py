"""A timing server: runs commands when told and reports how long each took.

Run as ``python -S bench/spawner.py`` (standard library only). The bench starts
one on the host and one inside crun's cgroup namespace (``cgroupns.sh``), so that
every command-line variant (floors, CLI, crun, runc, bwrap) is timed the same
way: ``subprocess`` from a small idle Python process, the clock read just before
the spawn and just after the wait. ``time.monotonic_ns`` is CLOCK_MONOTONIC,
shared by all processes, so the bench can relate these times to its own.

Protocol: one JSON object per line on stdin, one reply per line on stdout.

* ``{"op": "run", "argvs": [[...], ...], "idle": S, "env": {...}}``: run each command
  in turn, sleeping S seconds before each, with ``env`` added to the environment;
  reply ``{"runs": [{"start", "end", "rc", "err"}]}``.
* ``{"op": "batch", "argvs": [[...], ...], "pidfiles": [...]}``: start every command
  at once and wait for all; if ``pidfiles`` are given (``crun run -d --pid-file``),
  then wait until each of those processes has exited. Reply ``{"start",
  "returned": [...], "exited": [...], "rcs": [...], "err"}``.
* ``{"op": "exit"}``: reply ``{}`` and exit.

With ``--subreaper`` (the server inside crun's namespace) the server is a child
subreaper: a detached container's process is reparented to it and reaped here, not
left to the machine's init. The host's server is not, so that Codex-32's daemonized
monitors end up where they would without the bench.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
ERR_TAIL = 2000


def _subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _tail(err: Any) -> str:
    err.seek(0)
    data: bytes = err.read()
    return data[-ERR_TAIL:].decode(errors="replace")


def run(argvs: list[list[str]], idle: float, extra_env: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **extra_env} if extra_env else None
    runs = []
    with tempfile.TemporaryFile() as err:
        for argv in argvs:
            if idle:
                time.sleep(idle)
            err.seek(0)
            err.truncate()
            start = time.monotonic_ns()
            try:
                rc = subprocess.call(
                    argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
                )
            except OSError as exc:
                rc = 127
                err.write(str(exc).encode())
            end = time.monotonic_ns()
            runs.append({"start": start, "end": end, "rc": rc, "err": _tail(err) if rc else ""})
    _reap_orphans()
    return {"runs": runs}


def _wait_exits(pids: list[int], timeout: float) -> list[int]:
    """Monotonic time at which each pid was seen gone (pidfd readable)."""
    exited = [0] * len(pids)
    fds: dict[int, int] = {}
    for i, pid in enumerate(pids):
        try:
            fds[os.pidfd_open(pid)] = i
        except (ProcessLookupError, ValueError, OSError):
            exited[i] = time.monotonic_ns()
    deadline = time.monotonic() + timeout
    try:
        while fds:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select(list(fds), [], [], remaining)
            now = time.monotonic_ns()
            for fd in ready:
                exited[fds.pop(fd)] = now
                os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return exited


def batch(argvs: list[list[str]], pidfiles: list[str], timeout: float) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile()) for _ in argvs]
        null = subprocess.DEVNULL
        start = time.monotonic_ns()
        procs = [
            subprocess.Popen(argv, stdin=null, stdout=null, stderr=err)
            for argv, err in zip(argvs, errs, strict=True)
        ]
        returned = [0] * len(procs)
        rcs = [0] * len(procs)
        pending = {proc.pid: i for i, proc in enumerate(procs)}
        while pending:
            # Any child may be reaped here, so use waitpid(-1) rather than Popen.wait.
            pid, status = os.waitpid(-1, 0)
            now = time.monotonic_ns()
            i = pending.pop(pid, -1)
            if i >= 0:
                returned[i] = now
                rcs[i] = os.waitstatus_to_exitcode(status)
                procs[i].returncode = rcs[i]
        err_text = "; ".join(_tail(errs[i]) for i, rc in enumerate(rcs) if rc)[:ERR_TAIL]
    pids = []
    for path in pidfiles:
        try:
            with open(path) as f:
                pids.append(int(f.read().strip()))
        except (OSError, ValueError):
            pids.append(0)
    exited = _wait_exits([p for p in pids if p], timeout) if pidfiles else []
    _reap_orphans()
    return {"start": start, "returned": returned, "exited": exited, "rcs": rcs, "err": err_text}


def main() -> int:
    if "--subreaper" in sys.argv[1:]:
        _subreaper()
    for line in sys.stdin:
        request = json.loads(line)
        op = request.get("op")
        if op == "run":
            reply = run(request["argvs"], float(request.get("idle", 0)), request.get("env", {}))
        elif op == "batch":
            pidfiles = request.get("pidfiles", [])
            reply = batch(request["argvs"], pidfiles, float(request.get("timeout", 60)))
        elif op == "exit":
            reply = {}
        else:
            reply = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if op == "exit":
            break
    _reap_orphans()
    return 0


if __name__ == "__main__":
    sys.exit(main())

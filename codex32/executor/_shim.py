"""The keeper of one LOCAL_PROCESS run (a small conmon): run by file path with ``python -S``.

The executor may be a CLI that exits at once, or a service that is killed: the bot
must outlive it, its output must still be written, its exit code still known. So
the executor starts this process (in a session of its own), which

* starts the bot in a new session (so its own process group), with the rlimits asked,
  its stdout and stderr on one pipe;
* forks away from its parent (which exits at once), so that it is nobody's child;
* prints ``{"pid": N}`` on its stdout and closes it (the executor reads one line);
* copies the pipe into the bot's log file, rotated at ``--max-bytes`` into
  ``--files`` files (``bot.log``, ``bot.log.1``, ...);
* when the bot ends, writes ``{"exit_code", "signal", "finished_at"}`` to the exit
  file (atomically: a reader sees all of it or nothing), then exits.

Standard library only: it starts with ``-S`` (no site-packages) in ~15 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import resource
import select
import signal
import subprocess
import sys
import time

RLIMITS = {
    "as": resource.RLIMIT_AS,
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "stack": resource.RLIMIT_STACK,
    "memlock": resource.RLIMIT_MEMLOCK,
}


class RotatingLog:
    """Append to ``path``; past ``max_bytes`` shift it to ``path.1`` (and so on)."""

    def __init__(self, path: str, max_bytes: int, files: int) -> None:
        self.path, self.max_bytes, self.files = path, max_bytes, files
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = os.fstat(self.fd).st_size

    def write(self, data: bytes) -> None:
        """Write ``data``, cut at line ends so that no file grows past ``max_bytes`` (one
        read may bring more than a whole file: a bot that prints fast)."""
        while len(data) > self.max_bytes - self.size:
            room = self.max_bytes - self.size
            cut = data.rfind(b"\n", 0, room) + 1
            if cut == 0 and self.size:  # no whole line fits: it starts the next file
                self.rotate()
                continue
            cut = cut or room  # a line longer than a whole file is split
            os.write(self.fd, data[:cut])
            data = data[cut:]
            self.rotate()
        if data:
            os.write(self.fd, data)
            self.size += len(data)

    def rotate(self) -> None:
        os.close(self.fd)
        if self.files <= 1:
            os.truncate(self.path, 0)
        else:
            for index in range(self.files - 1, 0, -1):
                older = f"{self.path}.{index - 1}" if index > 1 else self.path
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{index}")
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = 0


def _limits(specs: list[str]) -> list[tuple[int, int, int]]:
    limits = []
    for spec in specs:
        name, _, values = spec.partition("=")
        soft, _, hard = values.partition(":")
        limits.append((RLIMITS[name], int(soft), int(hard or soft)))
    return limits


def _write_atomically(path: str, data: dict[str, object]) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--max-bytes", type=int, default=10 << 20)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--exit-file", required=True)
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--rlimit", action="append", default=[])
    parser.add_argument("--user")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    # Daemonize: whoever started us gets its child back at once (no zombie, no waiting),
    # and we are init's, in a session of our own.
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    limits = _limits(args.rlimit)

    uid = gid = None
    groups: list[int] | None = None
    if args.user:
        entry = pwd.getpwuid(int(args.user)) if args.user.isdigit() else pwd.getpwnam(args.user)
        uid, gid, groups = entry.pw_uid, entry.pw_gid, []

    def prepare() -> None:  # in the bot, before exec
        for kind, soft, hard in limits:
            resource.setrlimit(kind, (soft, hard))
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)

    log = RotatingLog(args.log, args.max_bytes, args.files)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        bot = subprocess.Popen(
            command,
            cwd=args.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=prepare,  # noqa: PLW1509 - the keeper has no threads
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except OSError as error:
        log.write(f"[codex32 {stamp}] cannot start {command[0]!r}: {error}\n".encode())
        print(json.dumps({"error": f"cannot start {command[0]!r}: {error.strerror}"}), flush=True)
        _write_atomically(
            args.exit_file,
            {"exit_code": 127, "signal": 0, "finished_at": time.time(), "error": str(error)},
        )
        return 0
    # Beside the exit file: an executor killed before it recorded the pid finds it here.
    _write_atomically(args.exit_file.removesuffix(".exit") + ".pid", {"pid": bot.pid})
    print(json.dumps({"pid": bot.pid}), flush=True)
    os.close(1)
    os.open(os.devnull, os.O_WRONLY)  # fd 1 again, for anything printed later
    assert bot.stdout is not None
    pipe = bot.stdout.fileno()
    os.set_blocking(pipe, False)
    exited_at: float | None = None
    while True:
        ready, _, _ = select.select([pipe], [], [], 0.5)
        if ready:
            try:
                data = os.read(pipe, 65536)
            except BlockingIOError:
                data = b"-"
            if not data:
                break
            if data != b"-":
                log.write(data)
        if exited_at is None and bot.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and not ready and time.monotonic() - exited_at > 1.0:
            break  # the bot is gone; a child of it that kept the pipe is not waited for
    code = bot.wait()
    finished = time.time()
    number = -code if code < 0 else 0
    _write_atomically(
        args.exit_file,
        {"exit_code": 128 + number if number else code, "signal": number, "finished_at": finished},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

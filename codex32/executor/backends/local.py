"""LOCAL_PROCESS: a bot as a plain process of this machine, kept by ``_shim.py``.

The bot runs in a session (and so a process group) of its own, with the rlimits of
its config, its output in a rotated log file; stop sends SIGTERM to the whole group,
then SIGKILL after the timeout. What it does NOT isolate (see docs/executor.md): the
filesystem, the network, other processes, the user (it runs as the executor's user
unless ``user`` is set), and memory only as an address-space rlimit, not a cgroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from codex32.executor.backends import Observed, ProbeResult, Started, bot_dir, resolve_secrets
from codex32.executor.health import probe_http, probe_tcp
from codex32.executor.models import Bot, BotRun, DeploymentType, ExecProbe, HealthCheck, HttpProbe

SHIM = Path(__file__).resolve().parent.parent / "_shim.py"
_ULIMIT_NAMES = {"nofile", "nproc", "core", "cpu", "as", "data", "fsize", "stack", "memlock"}


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time in clock ticks since boot (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[19])


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started, in clock ticks since boot: unlike a wall-clock time, it does
    not move when the clock is set (the pid-reuse guard of the engine and of ps)."""
    found = _stat(pid)
    return None if found is None else float(found[1])


def same_process(pid: int | None, start_time: float | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start_time``, and alive
    (a zombie has ended: its keeper has not collected it yet)."""
    if not pid or start_time is None:
        return False
    found = _stat(pid)
    return found is not None and found[0] != "Z" and found[1] == int(start_time)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalProcessBackend:
    """Bots as processes: started through the shim, observed through /proc and files."""

    deployment_type = DeploymentType.LOCAL_PROCESS

    def __init__(self, storage_dir: Path) -> None:
        self.storage_dir = storage_dir

    def paths(self, bot: Bot, run: BotRun) -> tuple[Path, Path]:
        """The bot's log file and this run's exit file."""
        base = bot_dir(self.storage_dir, bot)
        return base / "bot.log", base / "runs" / f"{run.number}.exit"

    def _rlimits(self, bot: Bot) -> list[str]:
        config = bot.deployment_config
        limits: dict[str, tuple[int, int]] = {}
        if config.resources.memory_bytes:
            limits["as"] = (config.resources.memory_bytes, config.resources.memory_bytes)
        if config.resources.max_open_files:
            limits["nofile"] = (config.resources.max_open_files, config.resources.max_open_files)
        if config.resources.pids_limit:
            limits["nproc"] = (config.resources.pids_limit, config.resources.pids_limit)
        for ulimit in config.ulimits:
            name = ulimit.name.lower().removeprefix("rlimit_")
            if name in _ULIMIT_NAMES:
                limits[name] = (ulimit.soft, ulimit.hard)
        return [f"{name}={soft}:{hard}" for name, (soft, hard) in limits.items()]

    def environment(self, bot: Bot) -> dict[str, str]:
        state = bot_dir(self.storage_dir, bot) / "state"
        return {
            **os.environ,
            **bot.env,
            **resolve_secrets(bot),
            "BOT_ID": bot.id,
            "BOT_NAME": bot.name,
            "BOT_STATE_DIR": str(state),
            "PYTHONUNBUFFERED": "1",
        }

    async def start(self, bot: Bot, run: BotRun) -> Started:
        bot.check_code()
        log, exit_file = self.paths(bot, run)
        exit_file.parent.mkdir(parents=True, exist_ok=True)
        (log.parent / "state").mkdir(exist_ok=True)
        exit_file.unlink(missing_ok=True)
        exit_file.with_suffix(".pid").unlink(missing_ok=True)
        config = bot.deployment_config
        command = [sys.executable, str(bot.code_dir / bot.script_name), *bot.args]
        shim = [
            sys.executable,
            "-S",
            str(SHIM),
            "--log",
            str(log),
            "--max-bytes",
            str(config.log_max_bytes),
            "--files",
            str(config.log_max_files),
            "--exit-file",
            str(exit_file),
            "--cwd",
            str(bot.code_dir),
        ]
        for spec in self._rlimits(bot):
            shim += ["--rlimit", spec]
        if config.user:
            shim += ["--user", config.user]
        env = self.environment(bot)

        def launch() -> dict[str, object]:
            # The keeper's own errors go to the bot's log; it keeps no descriptor of ours
            # (a caller reading our output to its end would wait for the bot's).
            with (
                open(log, "ab") as errors,
                subprocess.Popen(
                    [*shim, "--", *command],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=errors,
                    env=env,
                    start_new_session=True,
                ) as process,
            ):  # the keeper forks away: this one exits at once
                assert process.stdout is not None
                line = process.stdout.readline()
            try:
                return dict(json.loads(line))
            except ValueError:
                return {"error": "the process keeper failed to start"}

        answer = await asyncio.to_thread(launch)
        if "error" in answer:
            from codex32 import ContainerError

            raise ContainerError(f"bot {bot.name}: {answer['error']}")
        pid = int(str(answer["pid"]))
        return Started(started_at=time.time(), pid=pid, pid_start_time=process_start_time(pid))

    def _exit(self, exit_file: Path) -> Observed | None:
        try:
            data = json.loads(exit_file.read_text())
        except (OSError, ValueError):
            return None
        return Observed(
            running=False,
            exit_code=int(data["exit_code"]),
            finished_at=float(data["finished_at"]),
            reason=data.get("error"),
        )

    async def status(self, bot: Bot, run: BotRun) -> Observed:
        _log, exit_file = self.paths(bot, run)
        ended = self._exit(exit_file)
        if ended is not None:
            return ended
        pid, start = run.pid, run.pid_start_time
        if pid is None:  # recorded as starting only: the keeper wrote down the pid it started
            with contextlib.suppress(OSError, ValueError, KeyError):
                pid = int(json.loads(exit_file.with_suffix(".pid").read_text())["pid"])
                start = process_start_time(pid)
        if same_process(pid, start):
            return Observed(running=True, pid=pid, pid_start_time=start)
        # Gone with no exit written: its keeper may be writing it now; else it was lost
        # (a reboot, or the keeper killed with it).
        for _ in range(20):
            await asyncio.sleep(0.1)
            ended = self._exit(exit_file)
            if ended is not None:
                return ended
        return Observed(
            running=False,
            lost=True,
            finished_at=time.time(),
            reason="the process is gone and no exit code was recorded",
        )

    async def stop(self, bot: Bot, run: BotRun, timeout: float) -> None:
        if not same_process(run.pid, run.pid_start_time) or run.pid is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if run.pid and group_alive(run.pid) and run.pid_start_time is None:
                    os.killpg(run.pid, signal.SIGKILL)
            return
        pgid = run.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while group_alive(pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        _log, exit_file = self.paths(bot, run)
        for _ in range(100):  # the keeper writes the exit code
            if exit_file.exists() or (not group_alive(pgid) and self._exit(exit_file)):
                break
            await asyncio.sleep(0.05)

    async def logs(
        self,
        bot: Bot,
        run: BotRun | None,
        *,
        follow: bool,
        tail: int | None,
        live: Callable[[], bool],
    ) -> AsyncIterator[str]:
        base = bot_dir(self.storage_dir, bot) / "bot.log"
        async for line in follow_file(base, follow=follow, tail=tail, live=live):
            yield line

    async def probe(self, bot: Bot, run: BotRun, check: HealthCheck) -> ProbeResult:
        probe = check.probe
        if isinstance(probe, ExecProbe):
            return await self._exec(bot, probe, check.timeout)
        if isinstance(probe, HttpProbe):
            return await probe_http(probe, "127.0.0.1", check.timeout)
        return await probe_tcp(probe, "127.0.0.1", check.timeout)

    async def _exec(self, bot: Bot, probe: ExecProbe, timeout: float) -> ProbeResult:
        """The command runs next to the bot: its directory, its environment."""
        try:
            process = await asyncio.create_subprocess_exec(
                *probe.command,
                cwd=bot.code_dir,
                env=self.environment(bot),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as error:
            return ProbeResult(False, f"{probe.command[0]}: {error.strerror}")
        try:
            out, _ = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return ProbeResult(False, f"timed out after {timeout:g}s")
        return ProbeResult(process.returncode == 0, out.decode(errors="replace")[-4096:])

    async def remove(self, bot: Bot) -> None:
        import shutil

        await asyncio.to_thread(shutil.rmtree, bot_dir(self.storage_dir, bot), True)


def _rotated(path: Path) -> list[Path]:
    """The log's files, oldest first (``bot.log.2``, ``bot.log.1``, ``bot.log``)."""
    older = sorted(
        path.parent.glob(path.name + ".*"),
        key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
    )
    return [p for p in older if p.suffix[1:].isdigit()] + [path]


async def follow_file(
    path: Path, *, follow: bool, tail: int | None, live: Callable[[], bool]
) -> AsyncIterator[str]:
    """Lines of a rotated log (the last ``tail``), then new ones while ``live()``."""
    lines: list[str] = []
    for part in _rotated(path):
        with contextlib.suppress(OSError):
            lines += part.read_text(errors="replace").splitlines(keepends=True)
    if tail is not None:
        lines = lines[-tail:] if tail else []
    for text in lines:
        yield text
    if not follow:
        return
    handle: BinaryIO | None = None
    with contextlib.suppress(OSError):
        handle = open(path, "rb")  # noqa: SIM115 - kept open while following
        handle.seek(0, os.SEEK_END)
    pending = b""
    idle_since: float | None = None
    try:
        while True:
            data = handle.read() if handle else b""
            if data:
                idle_since = None
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.decode(errors="replace") + "\n"
                continue
            try:  # rotated: the path now names a new file
                moved = handle is None or os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
            except OSError:
                moved = False
            if moved:
                if handle:
                    handle.close()
                handle = open(path, "rb")  # noqa: SIM115
                continue
            if not live():
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
            await asyncio.sleep(0.1)
    finally:
        if handle:
            handle.close()
    if pending:
        yield pending.decode(errors="replace")

"""The bot supervisor process: ``python -m codex32.executor.supervisor``.

Without a host service, someone must watch bots between CLI commands (probe their
health, restart crashed processes). ``codex32 bot deploy`` starts this process,
detached, when no executor supervises the storage directory yet; with
``--exit-when-idle`` it ends once no bot should run. A second one started while
another holds the lock exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


async def supervise(storage_dir: Path | None, exit_when_idle: float | None) -> int:
    from codex32.executor.executor import AdaptiveExecutor

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with AdaptiveExecutor(storage_dir, supervise=True) as executor:
        if not executor.supervising:
            return 0
        logging.info("supervising bots in %s (pid %d)", executor.storage_dir, os.getpid())
        idle_since: float | None = None
        while not stop.is_set():
            with_work = any(d == "running" for _b, d in await executor.store.list_bots())
            if with_work:
                idle_since = None
            elif exit_when_idle is not None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= exit_when_idle:
                    logging.info("no bot to run: exiting")
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    return 0


def spawn(storage_dir: Path, exit_when_idle: float = 5.0) -> subprocess.Popen[bytes]:
    """Start a detached supervisor (its log: ``STORAGE/executor/supervisor.log``)."""
    log = storage_dir / "executor" / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "codex32.executor.supervisor",
                "--storage",
                str(storage_dir),
                "--exit-when-idle",
                str(exit_when_idle),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def is_supervised(storage_dir: Path, database_url: str | None = None) -> bool:
    """Whether an executor supervises this storage directory and database
    (``DATABASE_URL`` or the default SQLite when ``database_url`` is None)."""
    import fcntl

    from codex32.executor.db import supervisor_lock

    path = supervisor_lock(storage_dir, database_url)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", type=Path, default=None)
    parser.add_argument("--exit-when-idle", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return asyncio.run(supervise(args.storage, args.exit_when_idle))


if __name__ == "__main__":
    sys.exit(main())

"""Fixtures of the executor's tests: a real PostgreSQL server, databases, clean-up.

The PostgreSQL server is Debian's (``apt-get install postgresql``, done by setup.sh):
``initdb`` and ``pg_ctl`` in a temporary directory, run as the ``postgres`` user
(the server refuses root), listening on 127.0.0.1 (the session's own network
namespace) on a free port, stopped and deleted when the session ends. Each test gets
a database of its own on it, or a SQLite file: ``executor_db`` is parametrized.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from codex32.executor import AdaptiveExecutor
from codex32.executor.backends.local import same_process

BOTS = Path(__file__).resolve().parents[2] / "bots"


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    directory: Path

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def create_database(self, name: str) -> str:
        """A fresh database; its asyncpg URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def psql(self, sql: str, database: str = "postgres", user: str = "postgres") -> str:
        bin_dir = _postgres_bin()
        assert bin_dir is not None
        psql = shutil.which("psql") or str(bin_dir / "psql")
        done = subprocess.run(
            [
                psql,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                database,
                "-tAc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr.strip()}")
        return done.stdout


#: The session's one server: ``postgres`` is imported by several test modules, and pytest
#: makes a fixture of each import; they share it, and the last one done stops it.
_SHARED: dict[str, Any] = {"server": None, "users": 0}


def _run_as_postgres(command: list[Any], what: str) -> None:
    entry = pwd.getpwnam("postgres")
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def _start_postgres(bin_dir: Path) -> PostgresServer:
    entry = pwd.getpwnam("postgres")
    directory = Path(tempfile.mkdtemp(prefix="codex32-test-pg-"))
    os.chown(directory, entry.pw_uid, entry.pw_gid)
    data, log = directory / "data", directory / "server.log"
    try:  # a server that fails to start (a full disk) leaves its directory behind neither
        initdb = [bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        _run_as_postgres(initdb, "initdb")
        port = _free_port()
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = [bin_dir / "pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "-t", "60"]
        _run_as_postgres([*start, "start"], "pg_ctl start")
        return PostgresServer(port, directory)
    except BaseException:
        _stop_postgres(bin_dir, directory)
        raise


def _stop_postgres(bin_dir: Path, directory: Path) -> None:
    data = directory / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(RuntimeError):
            _run_as_postgres([bin_dir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], "stop")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this session's own (skips, naming it, without Debian's)."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL's server binaries are missing: apt-get install postgresql")
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as the postgres user")
    if _SHARED["server"] is None:
        _SHARED["server"] = _start_postgres(bin_dir)
    _SHARED["users"] += 1
    try:
        yield _SHARED["server"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            server, _SHARED["server"] = _SHARED["server"], None
            _stop_postgres(bin_dir, server.directory)


@pytest.fixture(params=["sqlite", "postgresql"])
def executor_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL of this test's own: a SQLite file, or a database on the server
    (dropped afterwards: each is some MB of disk)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'executor.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"t{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    yield server.create_database(name)
    server.psql(f'DROP DATABASE "{name}" WITH (FORCE)')


def shims(storage_dir: Path) -> list[str]:
    """Keepers of local bots of this storage directory that are still alive."""
    out = subprocess.run(
        ["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line
        for line in out.splitlines()
        if "_shim.py" in line and str(storage_dir) in line and not line.split()[1].startswith("Z")
    ]


@pytest.fixture
def bot_storage(storage_dir: Path) -> Iterator[Path]:
    """The session's storage directory; afterwards no bot process, keeper or container
    of the test may be left (each test removes its bots; this checks)."""
    before = set(shims(storage_dir))
    yield storage_dir
    deadline = time.monotonic() + 5
    while (
        left := [s for s in shims(storage_dir) if s not in before]
    ) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"bot keepers left behind: {left}"
    bots = storage_dir / "executor" / "bots"
    leftovers = list(bots.iterdir()) if bots.is_dir() else []
    assert not leftovers, f"bot directories left behind: {leftovers}"


async def cleanup(executor: AdaptiveExecutor) -> None:
    """Remove every bot of the executor's database (their processes, containers, files)."""
    for status in await executor.list():
        runs = await executor.runs(status.bot.id)
        pids = [(r.pid, r.pid_start_time) for r in runs]
        await executor.remove_bot(status.bot.id, force=True)
        for pid, start in pids:
            assert not same_process(pid, start), (
                f"bot {status.bot.name} pid {pid} still runs: " + str(runs)
            )


async def eventually(
    check: Callable[[], object], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Poll ``check`` (sync or async) until it returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)

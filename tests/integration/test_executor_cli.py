"""``codex32 bot ...`` and ``codex32 db ...`` as a user types them (real processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from executor_support import (
    BOTS,
    PostgresServer,
    bot_storage,  # noqa: F401 - a pytest fixture, used by name
    postgres,  # noqa: F401
)

pytestmark = pytest.mark.root


def codex32(
    storage: Path, *args: str, database: Path | str | None = None, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CODEX32_STORAGE_DIR": str(storage), **env}
    if database is not None:
        url = database if isinstance(database, str) else f"sqlite+aiosqlite:///{database}"
        environment["DATABASE_URL"] = url
    result = subprocess.run(
        [sys.executable, "-m", "codex32", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{args}: {result.stderr}"
    return result


def test_deploy_move_inspect_logs_stop_and_remove_a_bot(bot_storage: Path, tmp_path: Path) -> None:
    db = tmp_path / "bots.db"
    deployed = codex32(
        bot_storage,
        "bot",
        "deploy",
        str(BOTS / "sample_bot.py"),
        "--name",
        "cli-bot",
        "--json",
        "--",
        "--interval",
        "0.2",
        database=db,
    )
    first = json.loads(deployed.stdout)
    assert first["run"]["deployment_type"] == "local_process" and first["run"]["pid"]
    try:
        moved = codex32(
            bot_storage,
            "bot",
            "deploy",
            str(BOTS / "sample_bot.py"),
            "--name",
            "cli-bot",
            "--type",
            "container",
            "--isolation",
            "strict",
            "-m",
            "128m",
            "--network",
            "none",
            "--health-cmd",
            "true",
            "--health-interval",
            "0.5",
            "--json",
            database=db,
        )
        second = json.loads(moved.stdout)
        assert second["bot"]["id"] == first["bot"]["id"]
        assert second["bot"]["args"] == ["--interval", "0.2"]  # kept from the first deploy
        assert second["run"]["number"] == 2 and second["run"]["container_id"]
        config = second["bot"]["deployment_config"]
        assert config["isolation"] == "strict"
        assert config["resources"]["memory_bytes"] == 128 << 20

        listed = json.loads(codex32(bot_storage, "bot", "ls", "--json", database=db).stdout)
        assert [(b["bot"]["name"], b["run"]["state"]) for b in listed] == [("cli-bot", "running")]
        table = codex32(bot_storage, "bot", "ls", database=db).stdout
        assert "cli-bot" in table and "custom_container" in table

        deadline = time.monotonic() + 20
        while "heartbeat" not in (
            out := codex32(bot_storage, "bot", "logs", "cli-bot", database=db).stdout
        ):
            assert time.monotonic() < deadline, out
            time.sleep(0.3)
        deadline = time.monotonic() + 20
        while True:  # the supervisor the deploy started probes the container
            inspected = json.loads(
                codex32(bot_storage, "bot", "inspect", "cli-bot", database=db).stdout
            )
            if inspected["run"]["health"] == "healthy":
                break
            assert time.monotonic() < deadline, inspected["run"]
            time.sleep(0.3)
        assert [r["deployment_type"] for r in inspected["runs"]] == [
            "custom_container",
            "local_process",
        ]
        refused = codex32(bot_storage, "bot", "rm", "cli-bot", database=db, check=False)
        assert refused.returncode == 125
        assert refused.stderr.strip() == (
            "codex32: error: bot cli-bot is running. stop it first, or remove it with --force"
        )

        follow = subprocess.Popen(
            [sys.executable, "-m", "codex32", "bot", "logs", "-f", "cli-bot"],
            env={
                **os.environ,
                "CODEX32_STORAGE_DIR": str(bot_storage),
                "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            },
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        codex32(bot_storage, "bot", "stop", "cli-bot", database=db)
        out, _ = follow.communicate(timeout=20)  # ends by itself when the run ends
        assert follow.returncode == 0 and "stopped cleanly" in out
        runs = codex32(bot_storage, "bot", "runs", "cli-bot", database=db).stdout
        assert runs.splitlines()[1].split()[:3] == ["2", "custom_container", "stopped"]
    finally:
        codex32(bot_storage, "bot", "rm", "--force", "cli-bot", database=db)
    missing = codex32(bot_storage, "bot", "inspect", "cli-bot", database=db, check=False)
    assert missing.returncode == 125 and "no bot 'cli-bot'" in missing.stderr
    _supervisor_gone(bot_storage, f"sqlite+aiosqlite:///{db}")


def _supervisor_gone(storage: Path, database_url: str) -> None:
    """The supervisor the deploy started ends once no bot is to run."""
    from codex32.executor.supervisor import is_supervised

    deadline = time.monotonic() + 20
    while is_supervised(storage, database_url):
        assert time.monotonic() < deadline, "the bot supervisor did not exit when idle"
        time.sleep(0.2)


def test_bad_input_is_one_line_and_leaves_nothing(bot_storage: Path, tmp_path: Path) -> None:
    db = tmp_path / "bots.db"
    cases = [
        (["bot", "deploy", str(tmp_path / "absent.py")], "absent.py does not exist"),
        (
            ["bot", "deploy", str(BOTS / "sample_bot.py"), "--type", "docker"],
            "use process, container or pod",
        ),
        (["bot", "deploy", str(BOTS / "sample_bot.py"), "--health-http", "web"], "use PORT[/PATH]"),
        (["bot", "stop", "nobody"], "no bot 'nobody'"),
    ]
    for args, message in cases:
        result = codex32(bot_storage, *args, database=db, check=False)
        assert result.returncode == 125, args
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, (
            args,
            result.stderr,
        )
    listed = codex32(bot_storage, "bot", "ls", "--all", "--json", database=db).stdout
    assert json.loads(listed) == []
    # No cluster here: a pod bot is kept (with its failed run) and its manifests shown.
    pod = codex32(
        bot_storage,
        "bot",
        "deploy",
        str(BOTS / "sample_bot.py"),
        "--type",
        "pod",
        "--isolation",
        "strict",
        database=db,
        check=False,
        KUBECONFIG="/nonexistent",
    )
    assert pod.returncode == 125 and "set KUBECONFIG" in pod.stderr
    assert len(pod.stderr.strip().splitlines()) == 1
    shown = json.loads(codex32(bot_storage, "bot", "inspect", "sample-bot", database=db).stdout)
    assert shown["run"]["state"] == "failed"
    kinds = [m["kind"] for m in shown["manifests"]]
    assert kinds == ["ConfigMap", "Pod"]
    assert shown["manifests"][1]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"]
    codex32(bot_storage, "bot", "rm", "sample-bot", database=db)


def test_db_init_creates_user_database_and_tables_on_postgresql(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    name = f"bots_{os.getpid()}"
    made = codex32(
        tmp_path,
        "db",
        "init",
        "--admin-url",
        postgres.admin_url,
        "--database",
        name,
        "--user",
        name,
        "--password",
        "pass'word",
    )
    url = made.stdout.strip()
    assert url.startswith(f"postgresql+asyncpg://{name}:pass%27word@127.0.0.1:{postgres.port}/")
    owner = postgres.psql(
        f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'"
    )
    assert owner.strip() == name
    tables = postgres.psql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", database=name
    )
    assert tables.split() == ["alembic_version", "bot_runs", "bots"]
    again = codex32(
        tmp_path,
        "db",
        "init",
        "--admin-url",
        postgres.admin_url,
        "--database",
        name,
        "--user",
        name,
        "--password",
        "other",
    )
    assert again.stdout.strip().endswith(f"/{name}")  # a second init changes the password only
    upgraded = codex32(tmp_path, "db", "upgrade", "--url", again.stdout.strip())
    assert upgraded.stdout.strip().endswith("at revision 0001") and "other" not in upgraded.stdout
    listed = codex32(tmp_path, "bot", "ls", "--all", database=again.stdout.strip())
    assert listed.stdout.split() == [
        "BOT",
        "ID",
        "NAME",
        "TYPE",
        "STATE",
        "WHERE",
        "RUNS",
        "STARTED",
    ]


def test_db_init_without_a_server_makes_the_sqlite_database(tmp_path: Path) -> None:
    made = codex32(tmp_path, "db", "init", DATABASE_URL="")
    assert made.stdout.strip() == f"sqlite+aiosqlite:///{tmp_path}/executor/executor.db"
    assert (tmp_path / "executor" / "executor.db").is_file()
    bad = codex32(tmp_path, "db", "init", "--admin-url", "mysql://root@localhost/x", check=False)
    assert bad.returncode == 125 and "no PostgreSQL URL" in bad.stderr

"""``/api/v1/bots`` through a real service (its supervising executor), with httpx."""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from executor_support import PostgresServer, postgres  # noqa: F401 - a fixture

from service.service_support import API, Service, error_of

pytestmark = pytest.mark.root

BOTS = Path(__file__).resolve().parents[3] / "bots"


@pytest.fixture
def allowed_bots(scratch: Path) -> Iterator[Path]:
    """The sample bots below the policy's volume root (their code is bound in)."""
    directory = scratch / "allowed" / "bots"
    shutil.copytree(BOTS, directory, ignore=shutil.ignore_patterns("__pycache__"))
    yield directory
    shutil.rmtree(directory)


def _until(client: httpx.Client, path: str, test: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if test(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_deploy_list_health_logs_stop_restart_runs_remove(
    service: Service, allowed_bots: Path
) -> None:
    spec = {
        "name": "svc-bot",
        "code": str(allowed_bots / "sample_bot.py"),
        "args": ["--interval", "0.2"],
        "deployment_config": {
            "deployment_type": "custom_container",
            "network": "none",
            "health_check": {
                "probe": {"type": "exec", "command": ["python3", "-c", "print('ok')"]},
                "interval": 0.5,
            },
        },
    }
    with service.client() as client, service.websocket(f"{API}/events?filter=type=bot") as ws:
        ws.ping().wait(10)  # subscribed: the stream follows from here
        deployed = client.post(f"{API}/bots", json=spec)
        assert deployed.status_code == 201, deployed.text
        # The executor's hooks are events of the engine's stream too (type "bot").
        seen = [json.loads(ws.recv(timeout=20)) for _ in range(2)]
        assert [(e["type"], e["action"], e["name"]) for e in seen] == [
            ("bot", "bot_deployed", "svc-bot"),
            ("bot", "bot_started", "svc-bot"),
        ]
        assert seen[1]["attributes"] == {"trigger": "user", "run": "1"}
        body = deployed.json()
        assert body["run"]["state"] == "running" and body["run"]["container_id"]
        # The policy's limits are given to a bot that asks for none, as to any container.
        assert body["bot"]["deployment_config"]["resources"]["memory_bytes"] == 1 << 30
        try:
            listed = client.get(f"{API}/bots").json()
            assert [b["bot"]["name"] for b in listed] == ["svc-bot"]
            health = _until(
                client, f"{API}/bots/svc-bot/health", lambda h: h["health"] == "healthy"
            )
            assert health["run"] == 1 and health["health_check"]["interval"] == 0.5
            text = client.get(f"{API}/bots/svc-bot/logs").text
            assert "heartbeat" in text

            with client.stream("GET", f"{API}/bots/svc-bot/logs?follow=true&tail=0") as follow:
                with service.client() as other:
                    stopped = other.post(f"{API}/bots/svc-bot/stop").json()
                assert stopped["run"]["state"] == "stopped"
                followed = "".join(follow.iter_text())  # ends with the run
            assert "stopped cleanly" in followed

            restarted = client.post(f"{API}/bots/svc-bot/restart").json()
            assert restarted["run"]["number"] == 2 and restarted["run"]["state"] == "running"
            conflict = client.delete(f"{API}/bots/svc-bot")
            assert conflict.status_code == 409
            assert error_of(conflict)["hint"] == "stop it first, or remove it with --force"
            runs = client.get(f"{API}/bots/svc-bot/runs").json()
            assert [(r["number"], r["state"]) for r in runs] == [(2, "running"), (1, "stopped")]
        finally:
            assert client.delete(f"{API}/bots/svc-bot?force=true").status_code == 204
        gone = client.get(f"{API}/bots/svc-bot")
        assert gone.status_code == 404 and error_of(gone)["kind"] == "BotNotFoundError"


def test_policy_and_bad_input_are_one_message_each(
    service: Service, allowed_bots: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "bot.py"
    outside.write_text("print('hi')\n")
    cases = [
        ({"name": "local", "code": str(allowed_bots / "sample_bot.py")}, 403, "min_isolation"),
        (
            {
                "name": "outside",
                "code": str(outside),
                "deployment_config": {"deployment_type": "custom_container"},
            },
            403,
            "volume_roots",
        ),
        ({"name": "relative", "code": "bots/sample_bot.py"}, 400, None),
        ({"name": "Bad Name", "code": str(allowed_bots / "sample_bot.py")}, 400, None),
    ]
    with service.client() as client:
        for spec, status, rule in cases:
            answer = client.post(f"{API}/bots", json=spec)
            assert answer.status_code == status, (spec, answer.text)
            error = error_of(answer)
            assert "\n" not in error["message"]
            if rule:
                assert error["rule"] == rule, error
        assert client.get(f"{API}/bots?all=true").json() == []
        assert client.post(f"{API}/bots/nobody/stop").status_code == 404
        assert client.get(f"{API}/bots/nobody/logs").status_code == 404


def test_on_postgresql_a_sigkilled_service_loses_no_bot_and_no_run(
    storage_dir: Path,
    scratch: Path,
    policy_file: Path,
    templates: None,
    allowed_bots: Path,
    postgres: PostgresServer,
) -> None:
    """A service on the real PostgreSQL (``DATABASE_URL``): deploy a container bot, kill
    the service with SIGKILL, start another: the bot, its run and its container are all
    there; stop and runs answer from the database."""
    database = f"svc{int(time.time() * 1000) % 10**9}"
    url = postgres.create_database(database)
    workdir = scratch / "on-postgresql"
    workdir.mkdir()
    spec = {
        "name": "pg-bot",
        "code": str(allowed_bots / "sample_bot.py"),
        "args": ["--interval", "0.2"],
        "deployment_config": {"deployment_type": "custom_container", "network": "none"},
    }
    first = Service(storage_dir, workdir, policy=policy_file, env={"DATABASE_URL": url}).start()
    second: Service | None = None
    try:
        with first.client() as client:
            deployed = client.post(f"{API}/bots", json=spec)
            assert deployed.status_code == 201, deployed.text
            container = deployed.json()["run"]["container_id"]
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        second = Service(storage_dir, workdir, policy=policy_file, env={"DATABASE_URL": url})
        second.start()  # a stale socket, and the supervisor lock of the killed one
        with second.client() as client:
            status = client.get(f"{API}/bots/pg-bot").json()
            assert status["run"]["number"] == 1 and status["run"]["state"] == "running"
            assert status["run"]["container_id"] == container  # ran on, the same run
            stopped = client.post(f"{API}/bots/pg-bot/stop").json()
            assert stopped["run"]["state"] == "stopped"
            runs = client.get(f"{API}/bots/pg-bot/runs").json()
            assert [(r["number"], r["state"]) for r in runs] == [(1, "stopped")]
        tables = postgres.psql("SELECT count(*) FROM bot_runs", database=database)
        assert tables.strip() == "1"  # in PostgreSQL, not in a SQLite file
    finally:  # whatever failed, the bot is removed through a live service
        live = next((s for s in (second, first) if s and s.process.poll() is None), None)  # type: ignore[union-attr]
        live = live or Service(storage_dir, workdir, policy=policy_file, env=first.env).start()
        try:
            with live.client() as client:
                client.delete(f"{API}/bots/pg-bot", params={"force": True})
        finally:
            live.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            postgres.psql(f'DROP DATABASE "{database}" WITH (FORCE)')

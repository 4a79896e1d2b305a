"""Events (WebSocket and NDJSON, the CLI's containers included), images, networks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.service_support import API, Service, busybox, container, error_of

pytestmark = pytest.mark.root

CODEX32 = str(Path(sys.executable).with_name("codex32"))


def _cli(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CODEX32_STORAGE_DIR=str(service.storage_dir))
    return subprocess.run(
        [CODEX32, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_events_websocket_sees_containers_the_cli_made(service: Service) -> None:
    name = "made-by-cli"
    with service.websocket(f"{API}/events?filter=container={name}") as ws:
        ws.ping().wait(10)  # subscribed: the stream follows from here
        result = _cli(
            service,
            "run",
            "--rm",
            "--name",
            name,
            "--network",
            "none",
            "busybox",
            "--",
            "sh",
            "-c",
            "exit 4",
        )
        assert result.returncode == 4, result.stderr
        actions = []
        while "destroy" not in actions:
            event = json.loads(ws.recv(timeout=20))
            assert event["name"] == name
            actions.append(event["action"])
            if event["action"] == "die":
                assert event["attributes"]["exitCode"] == "4"
        assert actions[:2] == ["create", "start"] and "die" in actions


def test_events_ndjson_since_until_and_follow(service: Service) -> None:
    before = time.time()
    with service.client() as client:
        with container(client, busybox("exit 2", name="ev-past")) as cid:
            client.post(f"{API}/containers/{cid}/wait")
        after = time.time()
        params: dict[str, str | float] = {
            "since": before,
            "until": after,
            "filter": "container=ev-past",
        }
        past = [json.loads(x) for x in client.get(f"{API}/events", params=params).text.split()]
        assert [e["action"] for e in past][:2] == ["create", "start"]
        assert {"die", "destroy"} <= {e["action"] for e in past}

        got = []
        follow: dict[str, list[str] | float] = {
            "filter": ["container=ev-live", "event=die"],
            "since": time.time(),
        }
        with (
            client.stream("GET", f"{API}/events", params=follow) as stream,
            container(client, busybox("exit 6", name="ev-live")),
        ):
            for line in stream.iter_lines():
                got.append(json.loads(line))
                break
        assert got[0]["action"] == "die" and got[0]["attributes"]["exitCode"] == "6"
        bad = client.get(f"{API}/events", params={"filter": "nonsense"})
        assert bad.status_code == 400


def test_images_and_templates(service: Service) -> None:
    with service.client() as client:
        names = [i["name"] for i in client.get(f"{API}/images").json()]
        assert "busybox" in names
        assert [i["name"] for i in client.get(f"{API}/templates").json()] == names
        busybox_image = client.get(f"{API}/images/busybox").json()
        assert busybox_image["built"] is True
        assert error_of(client.get(f"{API}/templates/nope"))["kind"] == "ImageNotFoundError"


def test_build_streams_its_progress(service: Service) -> None:
    with (
        service.client(timeout=300) as client,
        client.stream("POST", f"{API}/images/busybox/build") as response,
    ):
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines()]
    progress = [x["stream"] for x in lines if "stream" in x]
    assert progress[0].startswith("building template busybox")
    assert any("[1/3]" in line for line in progress)
    assert lines[-1]["status"] == "built" and lines[-1]["image"]["built"] is True
    with service.client() as client:
        assert client.post(f"{API}/images/nope/build").status_code == 404


def test_networks(service: Service) -> None:
    with service.client() as client:
        body = {"name": "svc-net", "subnet": "10.231.0.0/24"}
        created = client.post(f"{API}/networks", json=body)
        assert created.status_code == 201, created.text
        try:
            assert created.json()["gateway"] == "10.231.0.1"
            assert "svc-net" in [n["name"] for n in client.get(f"{API}/networks").json()]
            inspected = client.get(f"{API}/networks/svc-net").json()
            assert inspected["Subnet"] == "10.231.0.0/24" and inspected["Containers"] == []
            again = client.post(f"{API}/networks", json=body)
            assert again.status_code == 409 and error_of(again)["kind"] == "NetworkError"
            bad = client.post(f"{API}/networks", json={"name": "bad-net", "subnet": "10.1.2.3/99"})
            assert bad.status_code == 400
        finally:
            assert client.delete(f"{API}/networks/svc-net").status_code == 204
        assert client.delete(f"{API}/networks/svc-net").status_code == 404
        default = client.delete(f"{API}/networks/bridge")
        assert default.status_code == 400 and "cannot be removed" in error_of(default)["message"]

"""The container endpoints through a real service, with httpx and websockets as clients."""

from __future__ import annotations

import io
import json
import tarfile
import time

import pytest

from service.service_support import API, Service, busybox, container, error_of, wait_for

pytestmark = pytest.mark.root


def test_root_health_and_openapi(service: Service) -> None:
    with service.client() as client:
        root = client.get("/").json()
        assert root["container_engine"] == "custom"
        assert root["isolation_levels"] == ["minimal", "standard", "strict"]
        assert "custom_container" in root["deployment_types"]
        assert root["cgroup_driver"] in ("v1", "v2", None)
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["container_engine"] == "custom"
        assert health.json()["status"] == "healthy"
        paths = client.get("/openapi.json").json()["paths"]
        assert f"{API}/containers/{{ref}}/logs" in paths
        assert client.get("/docs").status_code == 200


def test_lifecycle_verbs(service: Service) -> None:
    config = busybox(
        "echo started; trap 'echo got-term; exit 3' TERM; while true; do sleep 0.1; done",
        labels={"team": "bots"},
    )
    with service.client() as client, container(client, config, start=False) as cid:
        state = client.get(f"{API}/containers/{cid}").json()["State"]
        assert state["status"] == "created"
        assert client.post(f"{API}/containers/{cid}/start").status_code == 204
        wait_for(lambda: b"started" in client.get(f"{API}/containers/{cid}/logs").content)

        listed = client.get(f"{API}/containers", params={"label": "team=bots"}).json()
        assert [c["id"] for c in listed] == [cid]
        assert client.get(f"{API}/containers", params={"label": "team=other"}).json() == []
        by_state = client.get(f"{API}/containers", params={"state": "running"}).json()
        assert cid in [c["id"] for c in by_state]

        top = client.get(f"{API}/containers/{cid}/top").json()["processes"]
        assert any("sh" in p["command"] for p in top)
        stats = client.get(f"{API}/containers/{cid}/stats").json()
        assert stats["pids"] >= 1 and stats["memory_usage_bytes"] > 0

        assert client.post(f"{API}/containers/{cid}/pause").status_code == 204
        assert client.get(f"{API}/containers/{cid}").json()["State"]["status"] == "paused"
        assert client.post(f"{API}/containers/{cid}/unpause").status_code == 204

        response = client.post(f"{API}/containers/{cid}/stop", params={"timeout": 5})
        assert response.status_code == 204
        waited = client.post(f"{API}/containers/{cid}/wait").json()
        assert waited["exit_code"] == 3
        logs = client.get(f"{API}/containers/{cid}/logs").text
        assert logs == "started\ngot-term\n"

        assert (
            client.post(f"{API}/containers/{cid}/restart", params={"timeout": 1}).status_code == 204
        )
        assert client.get(f"{API}/containers/{cid}").json()["State"]["status"] == "running"
        assert (
            client.post(f"{API}/containers/{cid}/kill", params={"signal": "SIGKILL"}).status_code
            == 204
        )
        assert client.post(f"{API}/containers/{cid}/wait").json()["exit_code"] == 137

        assert client.delete(f"{API}/containers/{cid}").status_code == 204
        missing = client.get(f"{API}/containers/{cid}")
        assert missing.status_code == 404
        assert error_of(missing)["kind"] == "ContainerNotFoundError"


def test_inspect_has_the_policy_limits_and_config(service: Service) -> None:
    with service.client() as client, container(client, busybox("true"), start=False) as cid:
        found = client.get(f"{API}/containers/{cid}").json()
        # The caller asked for no limits: the policy's maximums were given.
        assert found["Config"]["resources"]["memory_bytes"] == 1 << 30
        assert found["Config"]["resources"]["pids_limit"] == 2000
        assert found["NetworkSettings"]["Mode"] == "none"


def test_logs_tail_since_timestamps_json(service: Service) -> None:
    script = "echo one; echo two >&2; sleep 1.2; echo three"
    with service.client() as client, container(client, busybox(script)) as cid:
        client.post(f"{API}/containers/{cid}/wait")
        base = f"{API}/containers/{cid}/logs"
        assert client.get(base, params={"tail": 1}).text == "three\n"
        assert client.get(base, params={"stderr": False}).text == "one\nthree\n"
        stamped = client.get(base, params={"timestamps": True, "tail": 1}).text
        assert stamped.endswith("Z three\n") and stamped[:4].isdigit()
        lines = [
            json.loads(x) for x in client.get(base, params={"format": "json"}).text.splitlines()
        ]
        assert [(x["stream"], x["log"]) for x in lines] == [
            ("stdout", "one\n"),
            ("stderr", "two\n"),
            ("stdout", "three\n"),
        ]
        last = lines[-1]["time"]
        assert client.get(base, params={"since": last}).text == "three\n"
        bad = client.get(base, params={"tail": "x"})
        assert bad.status_code == 400 and "tail" in error_of(bad)["message"]


def test_logs_follow_streams_until_the_exit(service: Service) -> None:
    script = "for i in 1 2 3; do echo line$i; sleep 0.3; done"
    with service.client() as client, container(client, busybox(script)) as cid:
        got = []
        started = time.monotonic()
        with client.stream("GET", f"{API}/containers/{cid}/logs", params={"follow": True}) as r:
            for line in r.iter_lines():
                got.append((line, time.monotonic() - started))
        assert [line for line, _ in got] == ["line1", "line2", "line3"]
        assert got[-1][1] - got[0][1] > 0.4  # streamed as written, not at the end


def test_stats_stream(service: Service) -> None:
    with service.client() as client, container(client, busybox("sleep 30")) as cid:
        samples = []
        params = {"stream": True, "interval": 0.2}
        with client.stream("GET", f"{API}/containers/{cid}/stats", params=params) as r:
            for line in r.iter_lines():
                samples.append(json.loads(line))
                if len(samples) == 3:
                    break
        assert samples[0]["cpu_percent"] is None
        assert all(s["cpu_percent"] is not None for s in samples[1:])
        assert samples[2]["time"] > samples[0]["time"]


def test_exec_captured(service: Service) -> None:
    with service.client() as client, container(client, busybox("sleep 30")) as cid:
        body = {
            "command": ["sh", "-c", "read x; echo got $x $FOO; echo oops >&2; exit 5"],
            "env": {"FOO": "bar"},
            "stdin": "hello\n",
        }
        result = client.post(f"{API}/containers/{cid}/exec", json=body).json()
        assert result == {"exit_code": 5, "stdout": "got hello bar\n", "stderr": "oops\n"}
        missing = client.post(f"{API}/containers/{cid}/exec", json={"command": ["nope-cmd"]})
        assert missing.status_code == 400  # as run: a command not found is the caller's
        assert error_of(missing)["kind"] == "LaunchError"
        empty = client.post(f"{API}/containers/{cid}/exec", json={"command": []})
        assert empty.status_code == 400


def test_exec_needs_a_running_container(service: Service) -> None:
    with service.client() as client, container(client, busybox("true"), start=False) as cid:
        response = client.post(f"{API}/containers/{cid}/exec", json={"command": ["true"]})
        assert response.status_code == 409
        assert error_of(response)["kind"] == "StateError"


def test_interactive_exec_with_a_terminal(service: Service) -> None:
    with service.client() as client, container(client, busybox("sleep 60")) as cid:
        path = f"{API}/containers/{cid}/exec?cmd=sh&tty=true&rows=30&cols=100"
        with service.websocket(path) as ws:
            ws.send(b"stty size\n")
            assert _read_until(ws, b"30 100")
            ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 120}))
            ws.send(b"stty size; tty; echo $((6*7))\n")
            out = _read_until(ws, b"42\r\n")
            assert b"40 120" in out and b"/dev/pts/" in out
            ws.send(b"exit 3\n")
            assert _exit_code(ws) == 3


def test_interactive_exec_without_a_terminal(service: Service) -> None:
    with service.client() as client, container(client, busybox("sleep 60")) as cid:
        path = f"{API}/containers/{cid}/exec?cmd=sh&cmd=-c&cmd=tr%20a-z%20A-Z&tty=false"
        with service.websocket(path) as ws:
            ws.send(b"shout\n")
            ws.send(json.dumps({"type": "eof"}))
            assert _read_until(ws, b"SHOUT\n")
            assert _exit_code(ws) == 0


def test_interactive_exec_errors_are_one_frame(service: Service) -> None:
    with service.websocket(f"{API}/containers/no-such/exec?cmd=sh") as ws:
        frame = json.loads(ws.recv(timeout=10))
        assert frame["type"] == "error" and frame["status"] == 404


def _read_until(ws: object, marker: bytes, timeout: float = 15) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[attr-defined]
        assert isinstance(frame, bytes), frame
        seen += frame
    return seen


def _exit_code(ws: object) -> int:
    while True:
        frame = ws.recv(timeout=15)  # type: ignore[attr-defined]
        if isinstance(frame, str):
            message = json.loads(frame)
            assert message["type"] == "exit", message
            code: int = message["exit_code"]
            return code


def test_export_tar_and_state(service: Service) -> None:
    with service.client() as client, container(client, busybox("echo hi > /marker")) as cid:
        client.post(f"{API}/containers/{cid}/wait")
        response = client.get(f"{API}/containers/{cid}/export")
        assert response.headers["content-type"] == "application/x-tar"
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            names = tar.getnames()
            marker = tar.extractfile("marker")
            assert marker is not None and marker.read() == b"hi\n"
        assert "bin/busybox" in names
        state = client.get(f"{API}/containers/{cid}/export", params={"state": True}).json()
        assert state["State"]["exit_code"] == 0 and state["Config"]["image"] == "busybox"
        tmp = service.storage_dir / "tmp"
        assert not tmp.exists() or list(tmp.iterdir()) == []  # the export's copy is gone


def test_run_attached(service: Service) -> None:
    with service.client() as client:
        config = busybox("echo out; echo err >&2; exit 9", auto_remove=True)
        result = client.post(f"{API}/containers/run", json=config).json()
        assert result["exit_code"] == 9
        assert (result["stdout"], result["stderr"]) == ("out\n", "err\n")
        missing = client.post(f"{API}/containers/run", json={**config, "command": ["nope"]})
        assert missing.status_code == 400
        assert "nope" in error_of(missing)["message"]

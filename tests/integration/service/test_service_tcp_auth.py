"""TCP needs a bearer token: 401 and nothing done without it; TLS on request; the audit log."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from service.service_support import API, Service, busybox, error_of, free_port

pytestmark = pytest.mark.root


def _init_token(storage_dir: Path) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "codex32.service",
            "--storage-dir",
            str(storage_dir),
            "--init-token",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def tcp_service(storage_dir: Path, scratch: Path, policy_file: Path) -> Iterator[Service]:
    token = _init_token(storage_dir)
    workdir = scratch / "tcp"
    workdir.mkdir()
    running = Service(
        storage_dir, workdir, policy=policy_file, listen=f"127.0.0.1:{free_port()}"
    ).start()
    running.token = token  # type: ignore[attr-defined]
    yield running
    running.stop()


def _tcp(service: Service, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"http://{service.listen}", headers=headers, timeout=30)


def test_the_token_file_is_0600(storage_dir: Path, tcp_service: Service) -> None:
    mode = stat.S_IMODE(os.stat(storage_dir / "service.token").st_mode)
    assert mode == 0o600


def test_requests_without_a_good_token_are_401_and_do_nothing(tcp_service: Service) -> None:
    token: str = tcp_service.token  # type: ignore[attr-defined]
    name = "tcp-must-not-exist"
    for client in (
        _tcp(tcp_service, None),
        _tcp(tcp_service, token[:-1] + "x"),
        _tcp(tcp_service, token + "x"),
    ):
        with client:
            for response in (
                client.get("/health"),
                client.post(f"{API}/containers", json=busybox("true", name=name)),
            ):
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == "Bearer"
                assert error_of(response)["kind"] == "Unauthorized"
    with httpx.Client(base_url=f"http://{tcp_service.listen}") as basic:
        response = basic.get("/health", headers={"Authorization": f"Basic {token}"})
        assert response.status_code == 401
    with tcp_service.client() as local:
        assert local.get(f"{API}/containers/{name}").status_code == 404  # nothing done
    audit = [e for e in tcp_service.audit() if e["status"] == 401]
    assert audit and all(e["who"]["transport"] == "tcp" for e in audit)


def test_the_right_token_works_and_is_audited(tcp_service: Service) -> None:
    token: str = tcp_service.token  # type: ignore[attr-defined]
    with _tcp(tcp_service, token) as client:
        assert client.get("/health").status_code == 200
        created = client.post(f"{API}/containers", json=busybox("true", name="tcp-audited"))
        assert created.status_code == 201
        assert client.delete(f"{API}/containers/tcp-audited").status_code == 204
    entries = [e for e in tcp_service.audit() if e["target"] == "tcp-audited"]
    assert [e["action"] for e in entries] == ["container.remove"]
    assert entries[0]["who"]["token"].startswith("sha256:")
    assert token not in (tcp_service.storage_dir / "audit.jsonl").read_text()
    creates = [
        e for e in tcp_service.audit() if e["action"] == "container.create" and e["status"] == 201
    ]
    assert any(e["who"].get("token") for e in creates)


def test_websockets_need_the_token_too(tcp_service: Service) -> None:
    with pytest.raises(InvalidStatus) as refused:
        tcp_service.tcp_websocket(f"{API}/events").close()
    assert refused.value.response.status_code == 401
    token: str = tcp_service.token  # type: ignore[attr-defined]
    with tcp_service.tcp_websocket(
        f"{API}/events", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        ws.ping()


def test_unix_peers_are_identified_by_their_credentials(service: Service) -> None:
    with service.client() as client:
        client.post(f"{API}/containers/nope/start")
    entry = [e for e in service.audit() if e["target"] == "nope"][-1]
    assert entry["who"]["transport"] == "unix"
    assert entry["who"]["uid"] == os.getuid() and entry["who"]["pid"] == os.getpid()
    assert entry["status"] == 404 and entry["result"] == "error"
    assert "no such container" in entry["error"]


def test_tcp_without_a_token_is_refused_at_start(scratch: Path) -> None:
    storage = scratch / "no-token-storage"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "codex32.service",
            "--storage-dir",
            str(storage),
            "--host",
            f"unix://{scratch}/no-token.sock",
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 125
    assert result.stderr.count("\n") == 1 and "--init-token" in result.stderr
    assert not Path(f"{scratch}/no-token.sock").exists()


def test_tls(storage_dir: Path, scratch: Path, policy_file: Path) -> None:
    cert, key = scratch / "cert.pem", scratch / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    token = _init_token(storage_dir)
    workdir = scratch / "tls"
    workdir.mkdir()
    running = Service(
        storage_dir,
        workdir,
        policy=policy_file,
        listen=f"127.0.0.1:{free_port()}",
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)],
    ).start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(verify=context, headers=headers) as client:
            assert client.get(f"https://{running.listen}/health").status_code == 200
        with (
            httpx.Client() as plain,
            pytest.raises(httpx.RemoteProtocolError),
        ):
            plain.get(f"http://{running.listen}/health", headers=headers)
    finally:
        running.stop()

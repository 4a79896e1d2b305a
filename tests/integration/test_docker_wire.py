"""The Docker socket's wire facts, checked with raw HTTP on its unix socket: version
negotiation, versioned and bare paths, Moby's booleans, error bodies, the hijack head."""

from __future__ import annotations

import json
import socket
import stat
import struct
import time

import pytest
from docker_server import DockerSocket, docker_socket

pytestmark = pytest.mark.root

_ = docker_socket  # the fixture, imported for this module


def _request(
    path: str,
    sock_path: str,
    method: str = "GET",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with ``Connection: close``; the status, headers and raw body."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(sock_path)
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: docker",
            "Connection: close",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if fields.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return int(status_line.split()[1]), fields, rest


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_text, _, data = data.partition(b"\r\n")
        size = int(size_text, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def test_ping_head_carries_the_api_version(docker_socket: DockerSocket) -> None:
    status, headers, body = _request("/_ping", str(docker_socket.path), "HEAD")
    assert status == 200 and headers["api-version"] == "1.43" and body == b""
    assert headers["ostype"] == "linux"
    status, _, body = _request("/_ping", str(docker_socket.path))
    assert (status, body) == (200, b"OK")


def test_versions_bare_and_in_the_path(docker_socket: DockerSocket) -> None:
    path = str(docker_socket.path)
    status, _, body = _request("/version", path)
    assert status == 200 and json.loads(body)["ApiVersion"] == "1.43"
    for version in ("v1.24", "v1.41", "v1.43"):
        assert _request(f"/{version}/containers/json", path)[0] == 200
    status, headers, body = _request("/v1.50/version", path)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "message": "client version 1.50 is too new. Maximum supported API version is 1.43"
    }
    assert _request("/v1.12/version", path)[0] == 400


def test_booleans_read_as_moby_reads_them(docker_socket: DockerSocket) -> None:
    path = str(docker_socket.path)
    created = _request(
        "/containers/create?name=wire-bool",
        path,
        "POST",
        json.dumps({"Image": "busybox", "Cmd": ["true"]}).encode(),
        {"Content-Type": "application/json"},
    )
    assert created[0] == 201
    try:
        for text, shown in (
            ("1", True),
            ("True", True),
            ("yes", True),
            ("0", False),
            ("no", False),
            ("FALSE", False),
            ("none", False),
            ("", False),
        ):
            status, _, body = _request(f"/containers/json?all={text}", path)
            names = [n for c in json.loads(body) for n in c["Names"]]
            assert status == 200 and ("/wire-bool" in names) is shown, text
    finally:
        _request("/containers/wire-bool?force=1", path, "DELETE")


def test_errors_are_one_json_message(docker_socket: DockerSocket) -> None:
    path = str(docker_socket.path)
    status, _, body = _request("/containers/nope/json", path)
    assert (status, json.loads(body)) == (404, {"message": "No such container: nope"})
    status, _, body = _request("/no/such/endpoint", path)
    assert status == 404 and "message" in json.loads(body)
    status, _, body = _request("/containers/create", path, "POST", b"{not json")
    assert status == 400 and json.loads(body)["message"].startswith("invalid JSON body")


def test_the_socket_is_0660(docker_socket: DockerSocket) -> None:
    assert stat.S_IMODE(docker_socket.path.stat().st_mode) == 0o660


def test_exec_start_is_a_hijack_with_frames(docker_socket: DockerSocket) -> None:
    path = str(docker_socket.path)
    body = json.dumps({"Image": "busybox", "Cmd": ["sleep", "30"]}).encode()
    status, _, _ = _request("/containers/create?name=wire-exec", path, "POST", body)
    assert status == 201
    try:
        assert _request("/containers/wire-exec/start", path, "POST")[0] == 204
        spec = {
            "Cmd": ["sh", "-c", "echo out; echo err >&2"],
            "AttachStdout": True,
            "AttachStderr": True,
        }
        _, _, made = _request("/containers/wire-exec/exec", path, "POST", json.dumps(spec).encode())
        exec_id = json.loads(made)["Id"]
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(path)
            start = json.dumps({"Detach": False, "Tty": False}).encode()
            s.sendall(
                f"POST /v1.43/exec/{exec_id}/start HTTP/1.1\r\nHost: docker\r\n"
                "Connection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(start)}\r\n\r\n".encode()
                + start
            )
            time.sleep(0.3)  # the head must come alone, before any output (docker-py 3332)
            first = s.recv(65536)
            head = first.decode()
            assert head.startswith("HTTP/1.1 101 UPGRADED\r\n"), head
            assert head.endswith("\r\n\r\n"), "output came in the same read as the head"
            assert "Upgrade: tcp" in head and "multiplexed-stream" in head
            assert "Transfer-Encoding" not in head and "Content-Length" not in head
            s.shutdown(socket.SHUT_WR)  # as the CLI does: the output must still come
            stream = b""
            while chunk := s.recv(65536):
                stream += chunk
        frames = []
        while stream:
            kind, size = struct.unpack(">BxxxL", stream[:8])
            frames.append((kind, stream[8 : 8 + size]))
            stream = stream[8 + size :]
        assert sorted(frames) == [(1, b"out\n"), (2, b"err\n")]
        _, _, inspected = _request(f"/exec/{exec_id}/json", path)
        assert json.loads(inspected)["ExitCode"] == 0
        assert json.loads(inspected)["Running"] is False
    finally:
        _request("/containers/wire-exec?force=1", path, "DELETE")

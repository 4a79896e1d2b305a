"""Real peers for the image tests: Debian's docker-registry on 127.0.0.1, images made
by umoci and skopeo from the busybox template's tree, hostile layers made with tarfile."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

TOOLS = ("docker-registry", "skopeo", "umoci", "htpasswd")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``."""

    host: str
    process: subprocess.Popen[bytes]
    user: str | None = None
    password: str | None = None

    def creds_args(self) -> list[str]:
        return [f"--dest-creds={self.user}:{self.password}"] if self.user else []


@contextlib.contextmanager
def run_registry(
    workdir: Path, *, user: str | None = None, token: TokenService | None = None
) -> Iterator[Registry]:
    """Start ``docker-registry`` on a free 127.0.0.1 port with storage in ``workdir``
    (basic auth when ``user`` is given; its password is ``user + "-pw"``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    auth = ""
    password = None
    if user:
        password = f"{user}-pw"
        line = subprocess.run(
            ["htpasswd", "-Bbn", user, password], capture_output=True, text=True, check=True
        ).stdout.strip()
        (workdir / "htpasswd").write_text(line + "\n")
        auth = f"auth:\n  htpasswd:\n    realm: codex32-test\n    path: {workdir / 'htpasswd'}\n"
    if token is not None:
        auth = (f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
                f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert}\n")  # fmt: skip
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {workdir / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "docker-registry did not start: " + (workdir / "registry.log").read_text()
                    ) from None
                time.sleep(0.1)
        yield Registry(f"127.0.0.1:{port}", process, user, password)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def make_oci_image(
    layout: Path,
    tag: str,
    rootfs: Path,
    *,
    cmd: list[str],
    entrypoint: list[str] | None = None,
    env: list[str] | None = None,
    workdir: str | None = None,
    user: str | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    """An OCI layout image made by umoci from ``rootfs`` plus ``extra`` files; returns
    ``oci:LAYOUT:TAG`` for skopeo. (``derive_image`` adds a layer to an image.)"""
    if not (layout / "index.json").exists():
        subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    image = f"{layout}:{tag}"
    subprocess.run(["umoci", "new", "--image", image], check=True)
    bundle = layout.parent / f"bundle-{tag}"
    shutil.rmtree(bundle, ignore_errors=True)
    subprocess.run(
        ["umoci", "unpack", "--image", image, str(bundle)], check=True, capture_output=True
    )
    shutil.rmtree(bundle / "rootfs")
    shutil.copytree(rootfs, bundle / "rootfs", symlinks=True)
    subprocess.run(
        ["umoci", "repack", "--image", image, str(bundle)], check=True, capture_output=True
    )
    if extra:
        for path, content in extra.items():
            target = bundle / "rootfs" / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        subprocess.run(
            ["umoci", "repack", "--image", image, str(bundle)], check=True, capture_output=True
        )
    shutil.rmtree(bundle)
    args = ["umoci", "config", "--image", image]
    args += [f"--config.cmd={c}" for c in cmd] or ["--clear=config.cmd"]
    for e in entrypoint or []:
        args.append(f"--config.entrypoint={e}")
    for e in env or []:
        args.append(f"--config.env={e}")
    if workdir:
        args.append(f"--config.workingdir={workdir}")
    if user:
        args.append(f"--config.user={user}")
    subprocess.run(args, check=True)
    return f"oci:{layout}:{tag}"


def skopeo_copy(source: str, dest: str, *extra: str) -> None:
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", *extra, source, dest],
        check=True,
        capture_output=True,
    )


# -- hand-made layers -----------------------------------------------------------------


def tar_layer(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    data: bytes = b"",
    mode: int = 0o644,
    link: str = "",
    uid: int = 0,
    gid: int = 0,
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.uid, info.gid = uid, gid
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, data


def write_docker_archive(
    path: Path,
    layers: list[bytes],
    *,
    tag: str,
    cmd: list[str] | None = None,
    extra_config: dict[str, object] | None = None,
) -> None:
    """A ``docker save``-style archive of uncompressed ``layers`` (for hostile cases)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": cmd or ["sh"], **(extra_config or {})},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(config_name, config)
        names = []
        for diff_id, layer in zip(diff_ids, layers, strict=True):
            name = f"{diff_id[7:]}/layer.tar"
            add(name, layer)
            names.append(name)
        add(
            "manifest.json",
            json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode(),
        )


def files_in(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def blobs_and_layers(storage: Path) -> tuple[set[str], set[str]]:
    root = storage / "images"
    blobs = {p.name for p in (root / "blobs" / "sha256").iterdir()} if root.exists() else set()
    layers = {p.name for p in (root / "layers").iterdir()} if root.exists() else set()
    return blobs, layers


def derive_image(layout: Path, base: str, tag: str, files: dict[str, bytes]) -> None:
    """Tag ``tag``: image ``base`` plus one layer with ``files`` (umoci unpack/repack)."""
    bundle = layout.parent / f"bundle-{tag}"
    shutil.rmtree(bundle, ignore_errors=True)
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{base}", str(bundle)],
        check=True,
        capture_output=True,
    )
    for path, content in files.items():
        target = bundle / "rootfs" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    subprocess.run(
        ["umoci", "repack", "--image", f"{layout}:{tag}", str(bundle)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(bundle)


# -- Docker Hub's token authentication: the registry checks tokens a token service signs --


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _libtrust_key_id(cert: Path) -> str:
    """The ``kid`` the registry derives from a certificate's key (docker/libtrust)."""
    import base64

    pem = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout  # fmt: skip
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem,
                         capture_output=True, check=True).stdout  # fmt: skip
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass
class TokenService:
    """A token service as Docker Hub's (``GET /token?service=&scope=``, Basic auth),
    signing RS256 JWTs with a key whose certificate the registry trusts."""

    realm: str
    service: str
    issuer: str
    cert: Path
    requests: list[dict[str, str]]


@contextlib.contextmanager
def run_token_service(workdir: Path, user: str, password: str) -> Iterator[TokenService]:
    import base64
    import http.server
    import threading
    import urllib.parse

    key, cert = workdir / "token.key", workdir / "token.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=codex32-token"],
                   check=True, capture_output=True)  # fmt: skip
    kid = _libtrust_key_id(cert)
    requests: list[dict[str, str]] = []
    service, issuer = "codex32-test-registry", "codex32-test-issuer"

    def sign(claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": kid}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(key)],
                                   input=signing_input.encode(), capture_output=True,
                                   check=True).stdout  # fmt: skip
        return f"{signing_input}.{_b64url(signature)}"

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(self.path).query))
            requests.append(query)
            auth = self.headers.get("Authorization", "")
            granted: list[dict[str, object]] = []
            if auth.startswith("Basic "):
                given = base64.b64decode(auth[6:]).decode()
                if given != f"{user}:{password}":
                    self.send_response(401)
                    self.end_headers()
                    return
                for scope in query.get("scope", "").split(" "):
                    kind, _, rest = scope.partition(":")
                    name, _, actions = rest.rpartition(":")
                    if kind == "repository":
                        granted.append({"type": kind, "name": name,
                                        "actions": actions.split(",")})  # fmt: skip
            now = int(time.time())
            token = sign({"iss": issuer, "sub": user if granted else "", "aud": service,
                          "exp": now + 300, "nbf": now - 10, "iat": now,
                          "jti": os.urandom(8).hex(), "access": granted})  # fmt: skip
            body = json.dumps({"token": token, "access_token": token}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield TokenService(f"http://127.0.0.1:{server.server_address[1]}/token", service,
                           issuer, cert, requests)  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

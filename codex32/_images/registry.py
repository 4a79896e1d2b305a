"""An OCI distribution (Docker registry v2) client on httpx: manifests and blobs.

Authentication follows the registry's ``WWW-Authenticate`` challenge: ``Bearer``
(Docker Hub's token service: a token per repository scope, fetched with the saved
credentials if any) or ``Basic``. Blobs download into a partial file that a later
pull resumes with a ``Range`` request; the whole file is hashed before the store
takes it. ``insecure`` speaks plain HTTP (``--insecure-registry``).

docs/images.md says why this is written on httpx rather than taken from python-dxf
or oras-py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from codex32._images import oci
from codex32.errors import ImageError

Progress = Callable[[str, int, int], None]
MAX_MANIFEST = 4 << 20
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """Talks to one registry host, for one repository at a time."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: tuple[str, str] | None = None,
        timeout: float = 60,
    ) -> None:
        self.host = host
        self.insecure = insecure
        self.base = f"{'http' if insecure else 'https'}://{host}/v2/"
        self.credentials = credentials
        self.http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=15),
            follow_redirects=True,
            headers={"User-Agent": "codex32"},
        )
        self._auth: dict[str, str] = {}  # scope -> Authorization header value

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests and authentication ----------------------------------------------

    def _send(self, repo: str, path: str, headers: dict[str, str]) -> httpx.Response:
        """GET ``path`` (streamed), answering one auth challenge; the caller closes it."""
        scope = f"repository:{repo}:pull"
        url = self.base + path
        for attempt in range(2):
            request_headers = dict(headers)
            if scope in self._auth:
                request_headers["Authorization"] = self._auth[scope]
            try:
                response = self.http.send(
                    self.http.build_request("GET", url, headers=request_headers), stream=True
                )
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            if response.status_code != 401 or attempt == 1:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            self._auth[scope] = self._answer(challenge, scope)
        raise AssertionError("unreachable")

    def _answer(self, challenge: str, scope: str) -> str:
        kind = challenge.split(" ", 1)[0].lower()
        params = dict(_CHALLENGE.findall(challenge))
        if kind == "basic":
            if self.credentials is None:
                raise ImageError(
                    f"registry {self.host} asks for a login",
                    hint=f"run `codex32 login {self.host}` first",
                )
            return "Basic " + _basic(self.credentials)
        if kind == "bearer" and "realm" in params:
            query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
            headers = {}
            if self.credentials is not None:
                headers["Authorization"] = "Basic " + _basic(self.credentials)
            try:
                reply = self.http.get(params["realm"], params=query, headers=headers)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            if reply.status_code != 200:
                raise ImageError(
                    f"registry {self.host}: its token service refused us "
                    f"(HTTP {reply.status_code})",
                    hint=f"check `codex32 login {self.host}`",
                )
            body = reply.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                raise ImageError(f"registry {self.host}: its token service gave no token")
            return f"Bearer {token}"
        raise ImageError(f"registry {self.host}: unsupported authentication {challenge!r}")

    def _transport_error(self, exc: httpx.HTTPError) -> ImageError:
        hint = "check the registry's address and that it is up"
        if not self.insecure and isinstance(exc, httpx.ConnectError | httpx.RemoteProtocolError):
            hint += "; for a plain-HTTP registry pass --insecure-registry"
        return ImageError(f"cannot reach registry {self.host}: {exc}", hint=hint)

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 300:
            return
        response.read()
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors)
        except ValueError:
            pass
        response.close()
        if response.status_code == 401:
            raise ImageError(
                f"registry {self.host}: not authorized for {what}",
                hint=f"check the name, or `codex32 login {self.host}`",
            )
        if response.status_code == 404:
            raise ImageError(
                f"registry {self.host}: {what} not found" + (f" ({detail})" if detail else "")
            )
        raise ImageError(f"registry {self.host}: {what}: HTTP {response.status_code} {detail}")

    # -- manifests and blobs --------------------------------------------------------

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        """(raw bytes, media type, digest) of a manifest or index, digest checked."""
        what = f"manifest {repo}:{reference}"
        response = self._send(repo, f"{repo}/manifests/{reference}", {"Accept": oci.ACCEPT})
        try:
            self._check(response, what)
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > MAX_MANIFEST:
                    raise ImageError(f"registry {self.host}: {what} is larger than 4 MiB")
        finally:
            response.close()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise ImageError(f"registry {self.host}: {what} has digest {digest}; refused")
        kind = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            document: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise ImageError(f"registry {self.host}: {what} is not JSON") from None
        return (
            raw,
            oci.media_type(
                document,
                kind if kind in (*oci.MANIFESTS, *oci.INDEXES, *oci.DOCKER_SCHEMA1) else "",
            ),
            digest,
        )

    def blob_bytes(self, repo: str, digest: str, limit: int = MAX_MANIFEST) -> bytes:
        """A small blob (a config), digest checked."""
        response = self._send(repo, f"{repo}/blobs/{digest}", {})
        try:
            self._check(response, f"blob {digest}")
            raw = b""
            for chunk in response.iter_bytes():
                raw += chunk
                if len(raw) > limit:
                    raise ImageError(f"registry {self.host}: blob {digest} is too large")
        finally:
            response.close()
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if actual != digest:
            raise ImageError(f"registry {self.host}: blob {digest} has digest {actual}; refused")
        return raw

    def download(
        self, repo: str, digest: str, partial: Path, size: int, progress: Progress | None = None
    ) -> int:
        """Fetch a blob into ``partial``, resuming what is there; return the offset it
        resumed from. The caller checks the digest of the whole file."""
        offset = partial.stat().st_size if partial.exists() else 0
        if size and offset > size:
            partial.unlink()
            offset = 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self._send(repo, f"{repo}/blobs/{digest}", headers)
        try:
            if response.status_code == 416:  # nothing left, or a stale partial
                response.close()
                partial.unlink(missing_ok=True)
                return self.download(repo, digest, partial, size, progress)
            self._check(response, f"blob {digest}")
            if offset and response.status_code != 206:
                offset = 0  # the server ignored the range: start over
            done = offset
            if progress:
                progress(digest, done, size)
            with open(partial, "ab" if offset else "wb") as out:
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    if size and done > size:
                        raise ImageError(
                            f"registry {self.host}: blob {digest} is larger "
                            f"than the {size} bytes its manifest says"
                        )
                    if progress:
                        progress(digest, done, size)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        finally:
            response.close()
        return offset


def _basic(credentials: tuple[str, str]) -> str:
    return base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()

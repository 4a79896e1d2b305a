"""Image references as Docker spells them: ``[REGISTRY/]REPOSITORY[:TAG][@DIGEST]``.

The rules are distribution's ``reference`` package's: the first component names a
registry when it has a ``.`` or a ``:`` or is ``localhost``; otherwise the image is on
Docker Hub (``docker.io``), where a one-component name is under ``library/``. The tag
is ``latest`` when neither a tag nor a digest is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codex32.errors import ImageError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REGISTRY = re.compile(r"^[a-zA-Z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised reference."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``: what tags and digests hang off."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host to talk to (Docker Hub's API is not at docker.io)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def reference(self) -> str:
        """The tag or the digest, as the registry's manifest URL takes it."""
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def familiar(self) -> str:
        """Docker's short spelling: ``alpine:3.20`` for ``docker.io/library/alpine:3.20``."""
        text = str(self)
        for prefix in (f"{DOCKER_HUB}/library/", f"{DOCKER_HUB}/"):
            if text.startswith(prefix):
                return text[len(prefix) :]
        return text


def parse_reference(text: str) -> Reference:
    """Parse ``text``; a malformed reference raises ``ImageError`` saying which part."""
    remainder, _, digest = text.strip().partition("@")
    if digest and not _DIGEST.match(digest):
        raise ImageError(
            f"invalid digest {digest!r} in image reference {text!r}",
            hint="a digest is sha256: and 64 lowercase hex digits",
        )
    tag = None
    slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.match(tag):
            raise ImageError(f"invalid tag {tag!r} in image reference {text!r}")
    parts = remainder.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, parts[1:]
        if not _REGISTRY.match(registry):
            raise ImageError(f"invalid registry {registry!r} in image reference {text!r}")
    else:
        registry, path = DOCKER_HUB, parts
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]
    for component in path:
        if not _COMPONENT.match(component):
            raise ImageError(
                f"invalid repository name {'/'.join(path)!r} in image reference {text!r}",
                hint="names are lowercase letters, digits and . _ - separated by /",
            )
    if not digest and tag is None:
        tag = "latest"
    return Reference(registry, "/".join(path), tag, digest or None)


def looks_like_reference(text: str) -> bool:
    """Whether ``text`` parses as a reference (without raising)."""
    try:
        parse_reference(text)
    except ImageError:
        return False
    return True

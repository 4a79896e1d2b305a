"""OCI and Docker image formats: media types, the platform choice, config -> ImageConfig.

An image is a manifest (its config blob and its layer blobs, in order) reached by a
tag or digest, possibly through an index (a manifest list) with one manifest per
platform. Docker's schema 2 types and the OCI types are the same shapes under other
names; both are read, and images this engine writes are OCI.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from codex32._images.image import ImageConfig
from codex32.errors import ImageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = OCI_LAYER + "+gzip"
OCI_LAYER_ZSTD = OCI_LAYER + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEXES = (OCI_INDEX, DOCKER_LIST)
LAYERS = (
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    DOCKER_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
)
ACCEPT = ", ".join((*MANIFESTS, *INDEXES))
REF_NAME = "org.opencontainers.image.ref.name"

_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i686": "386",
    "i386": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_platform() -> dict[str, str]:
    """The host as an OCI platform (``{"os": "linux", "architecture": "amd64"}``)."""
    machine = platform.machine()
    found = {"os": "linux", "architecture": _ARCH.get(machine, machine)}
    if machine.startswith("armv"):
        found["variant"] = machine[3:5]  # "v7", "v6"
    elif machine == "aarch64":
        found["variant"] = "v8"
    return found


def media_type(document: dict[str, Any], fallback: str = "") -> str:
    """A manifest's own ``mediaType`` (optional in OCI), else what it looks like."""
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if fallback:
        return fallback
    return OCI_INDEX if "manifests" in document else OCI_MANIFEST


def choose_platform(index: dict[str, Any], what: str) -> dict[str, Any]:
    """The index entry for the host's platform (variant optional, as Docker matches)."""
    want = host_platform()
    entries = [m for m in index.get("manifests", []) if isinstance(m, dict)]
    candidates = []
    for entry in entries:
        plat = entry.get("platform") or {}
        if plat.get("os") == want["os"] and plat.get("architecture") == want["architecture"]:
            exact = plat.get("variant") in (None, "", want.get("variant"))
            candidates.append((not exact, entry))
    if candidates:
        candidates.sort(key=lambda c: c[0])
        return candidates[0][1]
    if len(entries) == 1 and not entries[0].get("platform"):
        return entries[0]
    offered = sorted(
        {
            "/".join(
                v
                for v in (
                    (e.get("platform") or {}).get(k) for k in ("os", "architecture", "variant")
                )
                if v
            )
            or "unknown"
            for e in entries
        }
    )
    raise ImageError(
        f"{what} has no image for this host's platform {want['os']}/{want['architecture']}",
        hint=f"it offers: {', '.join(offered) or 'nothing'}",
    )


def check_manifest(manifest: dict[str, Any], what: str) -> None:
    """Refuse a manifest this engine cannot run, with the reason."""
    kind = manifest.get("mediaType", OCI_MANIFEST)
    if kind in DOCKER_SCHEMA1 or manifest.get("schemaVersion") == 1:
        raise ImageError(
            f"{what} is a Docker schema 1 image, which is deprecated and not supported",
            hint="push it again with a current Docker or skopeo (schema 2 / OCI)",
        )
    config = manifest.get("config")
    if not isinstance(config, dict) or not isinstance(manifest.get("layers"), list):
        raise ImageError(f"{what} is not an image manifest (no config or layers)")
    for layer in manifest["layers"]:
        if layer.get("mediaType", OCI_LAYER) not in LAYERS:
            raise ImageError(
                f"{what} has a layer of unsupported type {layer.get('mediaType')!r}",
                hint="layers must be tar, tar+gzip or tar+zstd",
            )


def parse_config(raw: bytes, what: str) -> dict[str, Any]:
    """The image config JSON; its diff_ids must be there."""
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ImageError(f"{what}: the image config is not JSON: {exc}") from None
    if not isinstance(config, dict) or not isinstance(
        (config.get("rootfs") or {}).get("diff_ids"), list
    ):
        raise ImageError(f"{what}: the image config has no rootfs.diff_ids")
    return config


def image_config(config: dict[str, Any]) -> ImageConfig:
    """What the image asks of its containers, from its config's ``config`` object."""
    run = config.get("config") or {}
    env: dict[str, str] = {}
    for item in run.get("Env") or []:
        name, _, value = str(item).partition("=")
        env[name] = value
    return ImageConfig(
        command=tuple(str(a) for a in run.get("Cmd") or ()),
        env=env,
        workdir=str(run.get("WorkingDir") or "/"),
        entrypoint=tuple(str(a) for a in run.get("Entrypoint") or ()),
        user=str(run.get("User") or ""),
        stop_signal=str(run.get("StopSignal") or ""),
        exposed_ports=tuple(sorted(run.get("ExposedPorts") or {})),
        labels={str(k): str(v) for k, v in (run.get("Labels") or {}).items()},
        healthcheck=run.get("Healthcheck") or None,
    )

"""Image archives: ``docker save`` tars, OCI image layouts (a directory or a tar), and
``save`` to an archive that both ``docker load`` and ``podman load`` accept.

Loading reads members by name and never extracts the archive: every blob goes through
the store (digest checked where the archive names one) and every layer through the
unpacker. ``save`` writes Docker's format as Docker 25 does, which is also an OCI
layout: ``manifest.json`` and ``repositories`` for ``docker load``, ``index.json`` and
``oci-layout`` for OCI tools, blobs under ``blobs/sha256/`` with layers uncompressed
(so each layer's file digest is its diff id, as ``docker load`` checks).
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import secrets
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from codex32._images import oci
from codex32._images.reference import Reference, parse_reference
from codex32._images.store import ImageRecord, ImageStore, LayerRef, layer_refs, sha256_hex
from codex32._images.unpack import open_layer
from codex32.errors import ImageError

MAX_JSON = 4 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class _Source:
    """An archive's members by name: a tar file or a directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tar: tarfile.TarFile | None = None
        self.members: dict[str, tarfile.TarInfo] = {}
        if path.is_dir():
            return
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
            for member in self.tar.getmembers():
                if member.isreg():
                    self.members[posixpath.normpath(member.name.lstrip("/"))] = member
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise ImageError(f"cannot read archive {path}: {exc}") from None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def exists(self, name: str) -> bool:
        if self.tar is None:
            return self._dir_file(name) is not None
        return posixpath.normpath(name) in self.members

    def _dir_file(self, name: str) -> Path | None:
        clean = posixpath.normpath(name)
        if clean.startswith(("/", "..")):
            return None
        candidate = self.path / clean
        return candidate if candidate.is_file() and not candidate.is_symlink() else None

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self.tar is None:
            found = self._dir_file(name)
            if found is None:
                raise ImageError(f"archive {self.path} has no {name}")
            fd = os.open(found, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                yield f
            return
        member = self.members.get(posixpath.normpath(name))
        stream = self.tar.extractfile(member) if member else None
        if stream is None:
            raise ImageError(f"archive {self.path} has no {name}")
        with stream:
            yield stream

    def read_json(self, name: str) -> Any:
        with self.open(name) as f:
            raw = f.read(MAX_JSON + 1)
        if len(raw) > MAX_JSON:
            raise ImageError(f"archive {self.path}: {name} is larger than 4 MiB")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ImageError(f"archive {self.path}: {name} is not JSON: {exc}") from None


def load_archive(store: ImageStore, path: Path) -> list[ImageRecord]:
    """Load every image of a ``docker save`` archive or OCI layout into ``store``."""
    if not path.exists():
        raise ImageError(f"no archive at {path}")
    source = _Source(path)
    try:
        if source.exists("manifest.json"):
            return _load_docker(store, source)
        if source.exists("index.json"):
            return _load_oci(store, source)
        raise ImageError(
            f"{path} is neither a docker save archive (manifest.json) nor an OCI layout "
            "(index.json)"
        )
    finally:
        source.close()


def _layer_type(store: ImageStore, digest: str) -> str:
    with open(store.blob_path(digest), "rb") as f:
        head = f.read(4)
    if head.startswith(_GZIP_MAGIC):
        return oci.OCI_LAYER_GZIP
    if head == _ZSTD_MAGIC:
        return oci.OCI_LAYER_ZSTD
    return oci.OCI_LAYER


def _blob_digest_of(name: str) -> str | None:
    """``blobs/sha256/HEX`` names its digest; other names (``ID/layer.tar``) do not."""
    parts = posixpath.normpath(name).split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        digest = f"{parts[1]}:{parts[2]}"
        sha256_hex(digest)
        return digest
    return None


def _load_docker(store: ImageStore, source: _Source) -> list[ImageRecord]:
    entries = source.read_json("manifest.json")
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"archive {source.path}: manifest.json lists no image")
    loaded = []
    for entry in entries:
        what = f"{source.path.name}: {entry.get('Config')}"
        with source.open(str(entry["Config"])) as f:
            config_digest = store.add_blob(f, _blob_digest_of(entry["Config"]), what)
        config = oci.parse_config(store.read_blob(config_digest), what)
        descriptors = []
        for name in entry.get("Layers") or []:
            with source.open(str(name)) as f:
                digest = store.add_blob(f, _blob_digest_of(name), f"{what}: layer {name}")
            descriptors.append(
                {
                    "mediaType": _layer_type(store, digest),
                    "digest": digest,
                    "size": store.blob_path(digest).stat().st_size,
                }
            )
        names = []
        for tag in entry.get("RepoTags") or []:
            names.append(parse_reference(str(tag)))
        loaded.append(_record(store, config_digest, config, descriptors, names, what))
    return loaded


def _load_oci(store: ImageStore, source: _Source) -> list[ImageRecord]:
    index = source.read_json("index.json")
    loaded = []
    for descriptor in index.get("manifests") or []:
        names = _oci_names(descriptor, source.path)
        manifest = _oci_blob_json(store, source, descriptor)
        if oci.media_type(manifest, descriptor.get("mediaType", "")) in oci.INDEXES:
            chosen = oci.choose_platform(manifest, str(source.path))
            manifest = _oci_blob_json(store, source, chosen)
        what = f"{source.path.name}: {descriptor.get('digest')}"
        oci.check_manifest(manifest, what)
        config_digest = str(manifest["config"]["digest"])
        with source.open(f"blobs/sha256/{sha256_hex(config_digest)}") as f:
            store.add_blob(f, config_digest, what)
        config = oci.parse_config(store.read_blob(config_digest), what)
        for layer in manifest["layers"]:
            with source.open(f"blobs/sha256/{sha256_hex(layer['digest'])}") as f:
                store.add_blob(f, layer["digest"], f"{what}: layer {layer['digest']}")
        loaded.append(_record(store, config_digest, config, manifest["layers"], names, what))
    if not loaded:
        raise ImageError(f"archive {source.path}: index.json lists no image")
    return loaded


def _oci_blob_json(store: ImageStore, source: _Source, descriptor: dict[str, Any]) -> Any:
    digest = str(descriptor.get("digest", ""))
    with source.open(f"blobs/sha256/{sha256_hex(digest)}") as f:
        store.add_blob(f, digest, f"{source.path.name}: manifest {digest}")
    return json.loads(store.read_blob(digest))


def _oci_names(descriptor: dict[str, Any], path: Path) -> list[Reference]:
    """The image's name from its annotations: containerd's full name, else the OCI
    ``ref.name`` (a full reference, or a bare tag named after the archive)."""
    annotations = descriptor.get("annotations") or {}
    full = annotations.get("io.containerd.image.name")
    if full:
        return [parse_reference(str(full))]
    ref_name = annotations.get(oci.REF_NAME)
    if not ref_name:
        return []
    if "/" in ref_name or ":" in ref_name:
        return [parse_reference(str(ref_name))]
    stem = path.name.split(".")[0].lower() or "image"
    return [parse_reference(f"localhost/{stem}:{ref_name}")]


def _record(
    store: ImageStore,
    config_digest: str,
    config: dict[str, Any],
    descriptors: list[dict[str, Any]],
    names: list[Reference],
    what: str,
) -> ImageRecord:
    """Write the OCI manifest for loaded blobs, unpack the layers, record the image."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {
            "mediaType": oci.OCI_CONFIG,
            "digest": config_digest,
            "size": store.blob_path(config_digest).stat().st_size,
        },
        "layers": [
            {
                "mediaType": d.get("mediaType", oci.OCI_LAYER),
                "digest": d["digest"],
                "size": int(d.get("size", 0)),
            }
            for d in descriptors
        ],
    }
    layers = layer_refs(manifest, config, what)
    for index, layer in enumerate(layers):
        store.ensure_layer(layer, f"{index + 1}/{len(layers)} ({layer.blob[:19]}) of {what}")
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    manifest_digest = store.add_blob_bytes(raw)
    return store.put_image(manifest_digest, config_digest, layers, names)


# -- save ---------------------------------------------------------------------------


def _layer_size(store: ImageStore, layer: LayerRef) -> int:
    meta = store.layer_dir(layer.diff_id).parent / "layer.json"
    try:
        return int(json.loads(meta.read_text())["size"])
    except (FileNotFoundError, KeyError, ValueError):
        size = 0
        with open_layer(str(store.blob_path(layer.blob))) as stream:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
        return size


def save_archive(
    store: ImageStore, images: list[tuple[ImageRecord, list[Reference]]], out: Path
) -> None:
    """Write ``images`` (each with the names to give it) to ``out``, replaced whole."""
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            written: set[str] = set()
            docker_manifest = []
            index_manifests = []
            repositories: dict[str, dict[str, str]] = {}

            def add_bytes(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))

            add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            for record, names in images:
                config_name = f"blobs/sha256/{sha256_hex(record.id)}"
                if config_name not in written:
                    add_bytes(config_name, store.read_blob(record.id))
                    written.add(config_name)
                layer_names = []
                descriptors = []
                for layer in record.layers:
                    name = f"blobs/sha256/{sha256_hex(layer.diff_id)}"
                    size = _layer_size(store, layer)
                    if name not in written:
                        info = tarfile.TarInfo(name)
                        info.size, info.mtime, info.mode = size, int(time.time()), 0o644
                        with open_layer(str(store.blob_path(layer.blob))) as stream:
                            tar.addfile(info, stream)
                        written.add(name)
                    layer_names.append(name)
                    descriptors.append(
                        {"mediaType": oci.OCI_LAYER, "digest": layer.diff_id, "size": size}
                    )
                manifest = {
                    "schemaVersion": 2,
                    "mediaType": oci.OCI_MANIFEST,
                    "config": {
                        "mediaType": oci.OCI_CONFIG,
                        "digest": record.id,
                        "size": len(store.read_blob(record.id)),
                    },
                    "layers": descriptors,
                }
                raw = json.dumps(manifest, separators=(",", ":")).encode()
                import hashlib

                manifest_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
                manifest_name = f"blobs/sha256/{sha256_hex(manifest_digest)}"
                if manifest_name not in written:
                    add_bytes(manifest_name, raw)
                    written.add(manifest_name)
                tags = [n.familiar() for n in names if n.tag]
                docker_manifest.append(
                    {"Config": config_name, "RepoTags": tags or None, "Layers": layer_names}
                )
                for ref in names or [None]:  # type: ignore[list-item]
                    annotations = {}
                    if ref is not None and ref.tag:
                        annotations = {"io.containerd.image.name": str(ref), oci.REF_NAME: ref.tag}
                        top = sha256_hex(record.layers[-1].diff_id) if record.layers else ""
                        repositories.setdefault(ref.familiar().rsplit(":", 1)[0], {})[ref.tag] = top
                    index_manifests.append(
                        {
                            "mediaType": oci.OCI_MANIFEST,
                            "digest": manifest_digest,
                            "size": len(raw),
                            **({"annotations": annotations} if annotations else {}),
                        }
                    )
            add_bytes(
                "index.json",
                json.dumps(
                    {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": index_manifests}
                ).encode(),
            )
            add_bytes("manifest.json", json.dumps(docker_manifest).encode())
            if repositories:
                add_bytes("repositories", json.dumps(repositories).encode())
        os.replace(tmp, out)
    except OSError as exc:
        raise ImageError(
            f"cannot write the archive {out}",
            errno=exc.errno,
            path=str(out),
            hint="check that the folder exists and is writable",
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)

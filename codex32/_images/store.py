"""The image store: content-addressed blobs, unpacked layers, images and their names.

Under ``STORAGE/images/``:

* ``blobs/sha256/HEX``: every manifest, config and layer blob, named by its digest and
  only ever renamed there after its digest was checked; downloads in progress sit in
  ``blobs/partial/`` (resumed, never trusted: the whole file is hashed again);
* ``layers/HEX/diff``: a layer unpacked (HEX is its diff id, the digest of its
  uncompressed tar, so the same layer compressed two ways is stored once), and
  ``diff-uidBASE``, the same unpacked with every owner shifted by a STRICT container's
  id base; each is unpacked into a staging directory and renamed into place whole;
* ``l/ID``: short symlinks to those directories, so that the overlay's ``lowerdir``
  option stays below the kernel's one-page limit with many layers (Docker's ``l/``);
* ``images/HEX.json``: an image (HEX is its id, the digest of its config): manifest,
  config, layers;
* ``index.json``: names (``registry/repo:tag``) and pinned digests (``repo@sha256:``)
  to image ids, rewritten whole and renamed over the old one under ``lock``.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from codex32._images import oci
from codex32._images.reference import Reference, parse_reference
from codex32._images.unpack import LayerError, UnpackLimits, unpack_layer
from codex32.errors import ImageError

_CHUNK = 1 << 20


def sha256_hex(digest: str) -> str:
    """The hex of a ``sha256:`` digest, refusing anything else (it becomes a file name)."""
    algorithm, _, hex_ = digest.partition(":")
    if algorithm != "sha256" or len(hex_) != 64 or not all(c in "0123456789abcdef" for c in hex_):
        raise ImageError(f"unsupported or malformed digest {digest!r}", hint="sha256 only")
    return hex_


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image: its blob and what it unpacks to."""

    blob: str
    diff_id: str
    media_type: str
    size: int


@dataclass(frozen=True)
class ImageRecord:
    """A stored image."""

    id: str
    manifest_digest: str
    manifest: dict[str, Any]
    config: dict[str, Any]
    layers: tuple[LayerRef, ...]
    names: tuple[str, ...]
    digests: tuple[str, ...]
    added: float

    @property
    def size(self) -> int:
        """The layers' blob sizes added up (what was downloaded)."""
        return sum(layer.size for layer in self.layers)


class ImageStore:
    """See the module docstring."""

    def __init__(self, storage_dir: Path, limits: UnpackLimits | None = None) -> None:
        self.root = storage_dir / "images"
        self.limits = limits or UnpackLimits()

    # -- layout and locking ------------------------------------------------------

    def ensure_layout(self) -> None:
        for sub in ("blobs/sha256", "blobs/partial", "blobs/tmp", "layers", "l", "images"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # A STRICT container's mapped root must reach its layers through these.
        for path in (self.root, self.root / "layers", self.root / "l"):
            os.chmod(path, 0o711)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store's one lock: index writes, layer renames and garbage collection."""
        self.ensure_layout()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- blobs --------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256_hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.root / "blobs" / "partial" / sha256_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def commit_blob(self, path: Path, digest: str, what: str) -> None:
        """Hash the file at ``path``; rename it into the store if it is ``digest``, else
        delete it and refuse."""
        actual = file_digest(path)
        if actual != digest:
            path.unlink(missing_ok=True)
            raise ImageError(f"{what}: its content's digest {actual} is not {digest}; discarded")
        os.chmod(path, 0o644)
        os.replace(path, self.blob_path(digest))

    def add_blob(self, stream: IO[bytes], expect: str | None = None, what: str = "blob") -> str:
        """Copy ``stream`` into the store, hashing it; return its digest."""
        self.ensure_layout()
        tmp = self.root / "blobs" / "tmp" / secrets.token_hex(8)
        sha = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    sha.update(chunk)
                    out.write(chunk)
            digest = "sha256:" + sha.hexdigest()
            if expect is not None and digest != expect:
                raise ImageError(f"{what}: its content's digest {digest} is not {expect}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.blob_path(digest))
        finally:
            tmp.unlink(missing_ok=True)
        return digest

    def add_blob_bytes(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if not self.has_blob(digest):
            self.ensure_layout()
            tmp = self.root / "blobs" / "tmp" / secrets.token_hex(8)
            tmp.write_bytes(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.blob_path(digest))
        return digest

    # -- layers ---------------------------------------------------------------------

    def layer_dir(self, diff_id: str, shift: int = 0) -> Path:
        name = "diff" if shift == 0 else f"diff-uid{shift}"
        return self.root / "layers" / sha256_hex(diff_id) / name

    def ensure_layer(self, layer: LayerRef, what: str, shift: int = 0) -> Path:
        """The layer unpacked (with owners shifted by ``shift``), made once."""
        target = self.layer_dir(layer.diff_id, shift)
        if target.is_dir():
            return target
        self.ensure_layout()
        target.parent.mkdir(mode=0o711, exist_ok=True)
        staging = target.parent / f".staging-{target.name}-{secrets.token_hex(6)}"
        staging.mkdir(mode=0o755)
        try:
            result = unpack_layer(
                str(self.blob_path(layer.blob)),
                str(staging),
                layer=what,
                limits=self.limits,
                shift=shift,
                userxattr=shift != 0,
                expect_diff_id=layer.diff_id,
            )
            with self.lock():
                if target.is_dir():  # another process unpacked it meanwhile
                    shutil.rmtree(staging)
                    return target
                os.rename(staging, target)
                if shift == 0:
                    meta = {
                        "diff_id": layer.diff_id,
                        "size": result.size,
                        "entries": result.entries,
                        "skipped_devices": result.skipped,
                    }
                    _write_atomic(target.parent / "layer.json", json.dumps(meta).encode())
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # only if nothing else of the layer is there
            if isinstance(exc, LayerError) and shift == 0:
                # A refused blob is not kept: nothing may later take it as checked.
                self.blob_path(layer.blob).unlink(missing_ok=True)
            raise
        return target

    def short_link(self, directory: Path) -> str:
        """``l/ID``, relative to the store's root: a short name for a layer directory."""
        relative = directory.relative_to(self.root)
        short = hashlib.sha256(str(relative).encode()).hexdigest()[:20]
        link = self.root / "l" / short
        if not link.parent.is_dir():
            self.ensure_layout()
        if not link.is_symlink():
            tmp = link.with_name(f".{short}-{secrets.token_hex(4)}")
            os.symlink(os.path.join("..", relative), tmp)
            os.replace(tmp, link)
        return f"l/{short}"

    # -- images and names ---------------------------------------------------------

    def _index_path(self) -> Path:
        return self.root / "index.json"

    def _read_index(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self._index_path().read_text())
        except FileNotFoundError:
            data = {}
        return {"tags": dict(data.get("tags", {})), "digests": dict(data.get("digests", {}))}

    def _write_index(self, index: dict[str, dict[str, str]]) -> None:
        _write_atomic(self._index_path(), json.dumps(index, indent=1, sort_keys=True).encode())

    def _image_path(self, image_id: str) -> Path:
        return self.root / "images" / f"{sha256_hex(image_id)}.json"

    def put_image(
        self,
        manifest_digest: str,
        config_digest: str,
        layers: builtins.list[LayerRef],
        names: Iterable[Reference],
    ) -> ImageRecord:
        """Record an image whose blobs and layers are all in place, and name it."""
        with self.lock():
            path = self._image_path(config_digest)
            if not path.is_file():
                body = {
                    "id": config_digest,
                    "manifest_digest": manifest_digest,
                    "layers": [layer.__dict__ for layer in layers],
                    "added": time.time(),
                }
                _write_atomic(path, json.dumps(body).encode())
            index = self._read_index()
            for ref in names:
                if ref.digest:
                    index["digests"][f"{ref.name}@{ref.digest}"] = config_digest
                if ref.tag:
                    index["tags"][f"{ref.name}:{ref.tag}"] = config_digest
            self._write_index(index)
        return self.get_by_id(config_digest)

    def get_by_id(self, image_id: str) -> ImageRecord:
        path = self._image_path(image_id)
        try:
            body = json.loads(path.read_text())
        except FileNotFoundError:
            raise ImageError(f"no image {image_id}") from None
        index = self._read_index()
        manifest = json.loads(self.read_blob(body["manifest_digest"]))
        config = json.loads(self.read_blob(manifest["config"]["digest"]))
        return ImageRecord(
            id=body["id"],
            manifest_digest=body["manifest_digest"],
            manifest=manifest,
            config=config,
            layers=tuple(LayerRef(**layer) for layer in body["layers"]),
            names=tuple(sorted(n for n, i in index["tags"].items() if i == image_id)),
            digests=tuple(sorted(n for n, i in index["digests"].items() if i == image_id)),
            added=float(body.get("added", 0)),
        )

    def ids(self) -> builtins.list[str]:
        folder = self.root / "images"
        if not folder.is_dir():
            return []
        return ["sha256:" + p.stem for p in folder.glob("*.json")]

    def list(self) -> builtins.list[ImageRecord]:
        found = []
        for image_id in self.ids():
            with contextlib.suppress(ImageError, FileNotFoundError):
                found.append(self.get_by_id(image_id))
        return sorted(found, key=lambda r: r.added, reverse=True)

    def find(self, text: str) -> ImageRecord | None:
        """An image by name[:tag], name@digest, id or unique id prefix; None if none."""
        index = self._read_index()
        image_id = None
        if text.startswith("sha256:") or _is_hex_prefix(text):
            prefix = text.removeprefix("sha256:")
            matches = [i for i in self.ids() if i.removeprefix("sha256:").startswith(prefix)]
            if len(matches) > 1:
                raise ImageError(f"image id prefix {text!r} is ambiguous", hint="give more digits")
            image_id = matches[0] if matches else None
        if image_id is None:
            try:
                ref = parse_reference(text)
            except ImageError:
                return None
            if ref.digest:
                image_id = index["digests"].get(f"{ref.name}@{ref.digest}")
                if image_id is None:  # a manifest digest of an image known by another name
                    image_id = next(
                        (r.id for r in self.list() if r.manifest_digest == ref.digest), None
                    )
            else:
                image_id = index["tags"].get(f"{ref.name}:{ref.tag}")
        if image_id is None:
            return None
        try:
            return self.get_by_id(image_id)
        except ImageError:
            return None

    def untag(self, name: str) -> None:
        with self.lock():
            index = self._read_index()
            index["tags"].pop(name, None)
            index["digests"].pop(name, None)
            self._write_index(index)

    def delete(self, image_id: str) -> None:
        """Forget an image and every name of it (blobs and layers stay until ``gc``)."""
        with self.lock():
            index = self._read_index()
            for kind in ("tags", "digests"):
                index[kind] = {n: i for n, i in index[kind].items() if i != image_id}
            self._write_index(index)
            self._image_path(image_id).unlink(missing_ok=True)

    def gc(self, in_use: set[str]) -> builtins.list[str]:
        """Remove blobs and layers no image refers to, and layer directories not in
        ``in_use`` (directories a container's overlay names). Returns what went."""
        removed: builtins.list[str] = []
        with self.lock():
            blobs: set[str] = set()
            diff_ids: set[str] = set()
            for image_id in self.ids():
                body = json.loads(self._image_path(image_id).read_text())
                blobs.add(body["manifest_digest"])
                blobs.add(image_id)
                for layer in body["layers"]:
                    blobs.add(layer["blob"])
                    diff_ids.add(layer["diff_id"])
            for path in (self.root / "blobs" / "sha256").iterdir():
                if "sha256:" + path.name not in blobs:
                    path.unlink()
                    removed.append("blob sha256:" + path.name)
            for folder in (self.root / "blobs" / "partial", self.root / "blobs" / "tmp"):
                for path in folder.iterdir():
                    path.unlink()
            used_dirs = {os.path.realpath(p) for p in in_use}
            for layer_dir in (self.root / "layers").iterdir():
                if "sha256:" + layer_dir.name in diff_ids:
                    continue
                real = os.path.realpath(layer_dir) + "/"
                if any(d.startswith(real) for d in used_dirs):
                    continue
                shutil.rmtree(layer_dir)
                removed.append("layer sha256:" + layer_dir.name)
            for link in (self.root / "l").iterdir():
                if not link.exists():
                    link.unlink()
        return removed


def _is_hex_prefix(text: str) -> bool:
    return 12 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def file_digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
    return "sha256:" + sha.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def layer_refs(manifest: dict[str, Any], config: dict[str, Any], what: str) -> list[LayerRef]:
    """Pair a manifest's layer blobs with its config's diff ids (counts must agree)."""
    blobs = manifest["layers"]
    diff_ids = config["rootfs"]["diff_ids"]
    if len(blobs) != len(diff_ids):
        raise ImageError(
            f"{what}: the manifest has {len(blobs)} layers but the config {len(diff_ids)} diff ids"
        )
    refs = []
    for blob, diff_id in zip(blobs, diff_ids, strict=True):
        sha256_hex(blob["digest"])
        sha256_hex(diff_id)
        refs.append(
            LayerRef(
                blob["digest"],
                diff_id,
                blob.get("mediaType", oci.OCI_LAYER),
                int(blob.get("size", 0)),
            )
        )
    return refs


__all__ = ["ImageRecord", "ImageStore", "LayerError", "LayerRef", "file_digest", "layer_refs"]

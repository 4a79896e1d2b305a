"""A directory as an OCI layer: a container's upper directory (``commit``) or a
template's tree (the base layer of an image committed from a template container).

Overlay's whiteouts (0/0 character devices) become OCI ``.wh.NAME`` entries and its
opaque directories ``.wh..wh..opq``; owners are shifted back by a STRICT container's
id base. The layer is written gzip-compressed; its blob digest and diff id (the digest
of the uncompressed tar) are computed on the way.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path


class _Hashing:
    """A write-only file that hashes (and counts) what passes through to ``target``."""

    def __init__(self, target: object) -> None:
        self.target = target
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)  # type: ignore[attr-defined, no-any-return]

    def flush(self) -> None:
        pass


@dataclass(frozen=True)
class BuiltLayer:
    blob: str
    diff_id: str
    size: int


def _opaque(path: str) -> bool:
    for name in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def write_layer(tree: Path, out: Path, *, shift: int = 0) -> BuiltLayer:
    """Write ``tree`` as a gzip tar layer to ``out``."""
    with open(out, "wb") as raw:
        compressed_hash = _Hashing(raw)
        with gzip.GzipFile(fileobj=compressed_hash, mode="wb", mtime=0) as gz:
            plain_hash = _Hashing(gz)
            with tarfile.open(fileobj=plain_hash, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                _add_tree(tar, str(tree), shift)
    return BuiltLayer(
        "sha256:" + compressed_hash.sha256.hexdigest(),
        "sha256:" + plain_hash.sha256.hexdigest(),
        compressed_hash.size,
    )


def _unshift(info: tarfile.TarInfo, shift: int) -> tarfile.TarInfo:
    if shift:
        info.uid = info.uid - shift if info.uid >= shift else info.uid
        info.gid = info.gid - shift if info.gid >= shift else info.gid
    info.uname = info.gname = ""
    return info


def _add_tree(tar: tarfile.TarFile, top: str, shift: int) -> None:
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        relative_dir = os.path.relpath(directory, top)
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            arcname = name if relative_dir == "." else f"{relative_dir}/{name}"
            info = os.lstat(path)
            if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0):
                parent = os.path.dirname(arcname)
                whiteout = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
                tar.addfile(whiteout)
                continue
            if stat.S_ISSOCK(info.st_mode):
                continue  # sockets do not go into archives
            entry = _unshift(tar.gettarinfo(path, arcname), shift)
            if entry.isreg():
                with open(path, "rb") as f:
                    tar.addfile(entry, f)
            else:
                tar.addfile(entry)
            if stat.S_ISDIR(info.st_mode) and not os.path.islink(path) and _opaque(path):
                tar.addfile(tarfile.TarInfo(f"{arcname}/.wh..wh..opq"))

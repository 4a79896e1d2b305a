"""Unpack one image layer, a hostile tar, as root, without trusting a byte of it.

Every entry is written relative to directory descriptors opened one component at a
time with ``O_NOFOLLOW | O_DIRECTORY`` (the ``*at`` calls, never a path string from
the archive): a symlink met on the way is never followed, so neither a symlink in the
layer nor a ``..`` can make a write land outside it. Names with ``..`` or a leading
``/`` are refused, as are hard links to anything outside the layer. Device nodes are
skipped unless asked for; owners beyond the container's id range become ``nobody``
and lose their set-id bits. OCI whiteouts become overlay's (a 0/0 character device;
``.wh..wh..opq`` an ``overlay.opaque`` xattr), so each layer unpacks on its own and is
shared by every image that has it. Decompressed bytes and entries are bounded, and
the diff id (the sha256 of the uncompressed tar) is computed on the way.

Each refusal is a ``LayerError``: one line naming the layer and the entry.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import IO

import zstandard

from codex32.errors import ImageError

NOBODY = 65534
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_READ_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    zlib.error,
    gzip.BadGzipFile,
    zstandard.ZstdError,
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerError(ImageError):
    """A layer that is refused: malformed, hostile, too big or not what it claims."""


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds on what one layer may hold (``Settings`` reads them from the environment)."""

    max_bytes: int = 16 << 30  # decompressed tar bytes
    max_entries: int = 1_000_000
    id_range: int = 65536  # owners at or above: nobody, without set-id bits
    devices: bool = False  # create device nodes (MINIMAL only asks for them)
    zstd_max_window: int = 1 << 27  # a zstd frame may not ask for more memory than this


@dataclass
class UnpackResult:
    """What unpacking saw."""

    diff_id: str
    size: int
    entries: int
    skipped: list[str] = field(default_factory=list)


class _Meter:
    """Reads a decompressed stream, hashing and counting it, refusing past ``limit``."""

    def __init__(self, stream: IO[bytes], limit: int, layer: str) -> None:
        self.stream = stream
        self.limit = limit
        self.layer = layer
        self.count = 0
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size >= 0 else _CHUNK)
        self.count += len(data)
        if self.count > self.limit:
            raise LayerError(
                f"layer {self.layer}: decompresses to more than {self.limit} bytes "
                "(a decompression bomb?)",
                hint="raise CODEX32_LAYER_MAX_BYTES if the image is genuine",
            )
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def open_layer(path: str, max_window: int = 1 << 27) -> IO[bytes]:
    """The layer blob at ``path``, decompressed (gzip, zstd or none, by its magic)."""
    with open(path, "rb") as probe:
        head = probe.read(4)
    if head.startswith(_GZIP_MAGIC):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    raw = open(path, "rb")  # noqa: SIM115 - handed to the caller (closed with the reader)
    if head == _ZSTD_MAGIC:
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window)
        return decompressor.stream_reader(raw, read_across_frames=True, closefd=True)
    return raw


def _clean(name: str, layer: str, what: str = "entry") -> list[str]:
    """The path's components; refuse absolute paths and ``..``."""
    if name.startswith("/"):
        raise LayerError(f"layer {layer}: {what} {name!r}: absolute path refused")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"layer {layer}: {what} {name!r}: '..' in the path refused")
    if any("\0" in p for p in parts):
        raise LayerError(f"layer {layer}: {what} {name!r}: NUL byte in the path refused")
    return parts


class _Writer:
    """Writes entries below one root descriptor; see the module's docstring."""

    def __init__(
        self, root_fd: int, layer: str, limits: UnpackLimits, shift: int, userxattr: bool
    ) -> None:
        self.root_fd = root_fd
        self.layer = layer
        self.limits = limits
        self.shift = shift
        self.opaque_xattr = "user.overlay.opaque" if userxattr else "trusted.overlay.opaque"
        self.skipped: list[str] = []

    def refuse(self, name: str, reason: str) -> LayerError:
        return LayerError(f"layer {self.layer}: entry {name!r}: {reason}")

    def parent(self, parts: list[str], name: str, create: bool = True) -> int:
        """A descriptor of the directory holding ``parts[-1]``, made as needed."""
        fd = os.dup(self.root_fd)
        try:
            for component in parts[:-1]:
                try:
                    child = os.open(component, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise self.refuse(name, "refers to a path not in the layer") from None
                    os.mkdir(component, 0o755, dir_fd=fd)
                    os.chown(component, self.shift, self.shift, dir_fd=fd, follow_symlinks=False)
                    child = os.open(component, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self.refuse(
                            name,
                            f"goes through {component!r}, which is a symlink or not a "
                            "directory; symlinks are never followed while unpacking",
                        ) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def owner(self, member: tarfile.TarInfo) -> tuple[int, int, int]:
        """(uid, gid, mode) as written: mapped into the range, set-id bits only inside it."""
        uid, gid, mode = member.uid, member.gid, member.mode & 0o7777
        limit = self.limits.id_range
        if not (0 <= uid < limit and 0 <= gid < limit):
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
            uid = uid if 0 <= uid < limit else NOBODY
            gid = gid if 0 <= gid < limit else NOBODY
        return uid + self.shift, gid + self.shift, mode

    @staticmethod
    def clear(pfd: int, leaf: str, keep_dir: bool) -> bool:
        """Remove what is at ``leaf`` (a directory only unless ``keep_dir``); True if a
        directory was kept."""
        try:
            info = os.lstat(leaf, dir_fd=pfd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(info.st_mode):
            if keep_dir:
                return True
            shutil.rmtree(leaf, dir_fd=pfd)
        else:
            os.unlink(leaf, dir_fd=pfd)
        return False

    def write(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        parts = _clean(name, self.layer)
        if not parts:
            return  # the layer's root itself: its mode is the directory's we made
        leaf = parts[-1]
        pfd = self.parent(parts, name)
        try:
            if leaf == _OPAQUE:
                os.setxattr(pfd, self.opaque_xattr, b"y")
            elif leaf.startswith(_WHITEOUT):
                self.whiteout(pfd, leaf[len(_WHITEOUT) :], name)
            else:
                self.entry(tar, member, pfd, leaf, name)
        except LayerError:
            raise
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise self.refuse(name, f"cannot be written: {reason}") from None
        finally:
            os.close(pfd)

    def whiteout(self, pfd: int, target: str, name: str) -> None:
        if target in ("", ".", "..") or target.startswith(_WHITEOUT):
            raise self.refuse(name, "malformed whiteout")
        self.clear(pfd, target, keep_dir=False)
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=pfd)
        os.chown(target, self.shift, self.shift, dir_fd=pfd, follow_symlinks=False)

    def entry(
        self, tar: tarfile.TarFile, member: tarfile.TarInfo, pfd: int, leaf: str, name: str
    ) -> None:
        uid, gid, mode = self.owner(member)
        if member.isdir():
            if not self.clear(pfd, leaf, keep_dir=True):
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            fd = os.open(leaf, _DIR_FLAGS, dir_fd=pfd)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        elif member.isreg() and not member.issparse():
            self.clear(pfd, leaf, keep_dir=False)
            fd = os.open(
                leaf,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=pfd,
            )
            try:
                source = tar.extractfile(member)
                if source is not None:
                    while chunk := source.read(_CHUNK):
                        os.write(fd, chunk)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)  # after chown, which clears set-id bits
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)
        elif member.issym():
            self.clear(pfd, leaf, keep_dir=False)
            os.symlink(member.linkname, leaf, dir_fd=pfd)
            os.chown(leaf, uid, gid, dir_fd=pfd, follow_symlinks=False)
        elif member.islnk():
            self.hard_link(member, pfd, leaf, name)
        elif member.isfifo():
            self.clear(pfd, leaf, keep_dir=False)
            os.mkfifo(leaf, mode, dir_fd=pfd)
            os.chown(leaf, uid, gid, dir_fd=pfd, follow_symlinks=False)
        elif member.ischr() or member.isblk():
            if not self.limits.devices:
                self.skipped.append(name)
                return
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            self.clear(pfd, leaf, keep_dir=False)
            os.mknod(leaf, kind | mode, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
            os.chown(leaf, uid, gid, dir_fd=pfd, follow_symlinks=False)
        else:
            raise self.refuse(name, f"unsupported tar entry type {member.type!r}")

    def hard_link(self, member: tarfile.TarInfo, pfd: int, leaf: str, name: str) -> None:
        source = _clean(member.linkname, self.layer, what=f"hard link {name!r} to")
        if not source:
            raise self.refuse(name, "hard link to the layer's root refused")
        sfd = self.parent(source, name, create=False)
        try:
            try:
                info = os.lstat(source[-1], dir_fd=sfd)
            except FileNotFoundError:
                raise self.refuse(
                    name, f"hard link to {member.linkname!r}, which is not in the layer"
                ) from None
            if stat.S_ISDIR(info.st_mode):
                raise self.refuse(name, "hard link to a directory refused")
            self.clear(pfd, leaf, keep_dir=False)
            os.link(source[-1], leaf, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(sfd)


def unpack_layer(
    blob: str,
    dest: str,
    *,
    layer: str,
    limits: UnpackLimits | None = None,
    shift: int = 0,
    userxattr: bool = False,
    expect_diff_id: str | None = None,
) -> UnpackResult:
    """Unpack the layer blob at ``blob`` into the empty directory ``dest``.

    ``shift`` is added to every owner (a STRICT container's id base); ``userxattr``
    marks opaque directories as an overlay mounted in a user namespace reads them.
    On any error ``dest`` is left for the caller to remove (it is a staging directory).
    """
    limits = limits or UnpackLimits()
    root_fd = os.open(dest, _DIR_FLAGS)
    stream = open_layer(blob, limits.zstd_max_window)
    meter = _Meter(stream, limits.max_bytes, layer)
    writer = _Writer(root_fd, layer, limits, shift, userxattr)
    entries = 0
    try:
        os.fchown(root_fd, shift, shift)
        try:
            with tarfile.open(fileobj=meter, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    entries += 1
                    if entries > limits.max_entries:
                        raise LayerError(
                            f"layer {layer}: more than {limits.max_entries} entries "
                            "(an entry-count bomb?)",
                            hint="raise CODEX32_LAYER_MAX_ENTRIES if the image is genuine",
                        )
                    writer.write(tar, member)
            meter.drain()  # the diff id covers the whole stream, padding included
        except _READ_ERRORS as exc:
            raise LayerError(f"layer {layer}: not a readable tar stream: {exc}") from None
    finally:
        os.close(root_fd)
        with contextlib.suppress(Exception):
            stream.close()
    diff_id = "sha256:" + meter.sha256.hexdigest()
    if expect_diff_id is not None and diff_id != expect_diff_id:
        raise LayerError(
            f"layer {layer}: its content's digest {diff_id} is not the diff id "
            f"{expect_diff_id} the image config names"
        )
    return UnpackResult(diff_id, meter.count, entries, writer.skipped)

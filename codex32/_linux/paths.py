"""Resolve container paths without ever leaving the container's root.

Every mount target inside the container (and every path the template controls) is
opened with openat2(RESOLVE_BENEATH): a symlink or ``..`` that would climb out of the
root fails with EXDEV instead of redirecting the mount onto the host, the class of
bug behind runc's CVE-2019-19921 and CVE-2021-30465. Mounts then target the opened
descriptor through ``/proc/self/fd/N``, so nothing can be swapped in between.
"""

from __future__ import annotations

import errno
import os

from codex32._linux.syscalls import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    openat2,
)

O_PATH = 0o10000000
_BENEATH = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS


class EscapeError(OSError):
    """A container path that resolves outside the container root."""


def fd_path(fd: int) -> str:
    """The magic link through which a descriptor can be a mount source or target."""
    return f"/proc/self/fd/{fd}"


def _open(root_fd: int, relative: str, flags: int = 0) -> int:
    try:
        return openat2(root_fd, relative or ".", O_PATH | flags, _BENEATH)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise EscapeError(
                errno.EXDEV,
                f"/{relative} resolves outside the container root through a symlink or '..'; "
                "refusing to follow it",
                "/" + relative,
            ) from None
        raise


def open_beneath(root_fd: int, path: str, create: str | None = None) -> int:
    """Open ``path`` (absolute in the container) below ``root_fd`` as an O_PATH fd.

    ``create`` is ``"dir"`` or ``"file"`` to create what is missing (parents as
    directories), each component created relative to an already checked parent.
    """
    relative = path.strip("/")
    try:
        return _open(root_fd, relative)
    except OSError as exc:
        if exc.errno != errno.ENOENT or create is None:
            raise
    parts = relative.split("/")
    for index, name in enumerate(parts):
        sub = "/".join(parts[: index + 1])
        try:
            os.close(_open(root_fd, sub))
            continue
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
        parent = _open(root_fd, "/".join(parts[:index]), os.O_DIRECTORY)
        try:
            if index == len(parts) - 1 and create == "file":
                fd = os.open(
                    name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                    dir_fd=parent,
                )  # fmt: skip
                os.close(fd)
            else:
                os.mkdir(name, 0o755, dir_fd=parent)
        finally:
            os.close(parent)
    return _open(root_fd, relative)


def open_host_source(path: str) -> int:
    """Open a bind source on the host, refusing symlinks in any component.

    The engine resolved the path when the config was made; a symlink found here means
    something was swapped in since, so the mount is refused.
    """
    return openat2(-100, path, O_PATH, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

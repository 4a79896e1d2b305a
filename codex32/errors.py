"""The exception tree: one root, one subclass per concern, each carrying its context.

Every error says what failed, on which container, at which step, with which errno,
so that a user (or the CLI's one-line error) can act on it.
"""

from __future__ import annotations

import errno as errno_module
import os


class Codex32Error(Exception):
    """Root of every error Codex-32 raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        container: str | None = None,
        step: str | None = None,
        errno: int | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.container = container
        self.step = step
        self.errno = errno
        self.path = path
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        parts = []
        if self.container:
            parts.append(f"container {self.container}")
        if self.step:
            parts.append(f"step {self.step}")
        prefix = f"[{', '.join(parts)}] " if parts else ""
        text = prefix + self.message
        if self.path and self.path not in self.message:
            text += f" ({self.path})"
        if self.errno:
            name = errno_module.errorcode.get(self.errno, str(self.errno))
            reason = os.strerror(self.errno)
            if reason.lower() in text.lower() or "not found" in text:
                text += f" ({name})"
            else:
                text += f": {name} ({reason})"
        if self.hint:
            text += f". {self.hint}"
        return text


class ConfigError(Codex32Error):
    """A configuration the engine refuses before it creates anything."""


class ImageError(Codex32Error):
    """An image or rootfs template that cannot be found, fetched, unpacked or built."""


class ImageNotFoundError(ImageError):
    """No image or template by that name (Docker's "No such image")."""


class ContainerError(Codex32Error):
    """Something went wrong with a container (the original design's public name)."""


class ContainerNotFoundError(ContainerError):
    """No container by that name or id."""


class LaunchError(ContainerError):
    """The container's process could not be set up or executed.

    ``exit_code`` follows Docker: 125 for an engine error, 126 when the command cannot
    be executed, 127 when it is not found.
    """

    def __init__(
        self,
        message: str,
        *,
        exit_code: int = 125,
        container: str | None = None,
        step: str | None = None,
        errno: int | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.exit_code = exit_code
        super().__init__(message, container=container, step=step, errno=errno, path=path, hint=hint)


class StateError(ContainerError):
    """A verb that the container's current state does not allow."""


class DamagedRecordError(ContainerError):
    """A container's ``state.json`` that cannot be trusted (not JSON, wrong shape, an
    id that is not its directory's): listed as damaged, removable with ``rm -f``."""


class CgroupError(Codex32Error):
    """A cgroup could not be created, configured or removed."""


class NetworkError(Codex32Error):
    """A network, address or link could not be set up or removed."""


def printable(text: object, limit: int = 1000) -> str:
    """``text`` made safe to print as the engine's own words: one line, no control or
    format characters (terminal escapes, a forged second line, bidi overrides), each
    shown escaped instead, and at most ``limit`` characters.

    An error message may carry what a container wrote (a name from its /etc/passwd,
    a path in its root); the engine must never print that as if it said it.
    """
    out = []
    for char in str(text):
        if char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    cleaned = "".join(out)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."

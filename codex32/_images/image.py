"""What an image asks of its containers, whatever made the image.

The plan (``codex32._plan``) compiles from this, not from a template's recipe, so that
a rootfs template and an OCI image (its config's Cmd, Env, WorkingDir) are one thing
to it; the image's layers become the overlay's lower directories
(``ContainerPaths.lower``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostBind:
    """A host path bound read-only into every container of the image."""

    source: str
    target: str
    optional: bool = False


@dataclass(frozen=True)
class ImageConfig:
    """The defaults an image gives a container: command, environment, directories.

    ``command`` is the image's Cmd, ``entrypoint`` its Entrypoint (Docker's rules for
    combining them with ``run``'s command and ``--entrypoint`` are in the plan).
    ``healthcheck`` is the OCI config's ``Healthcheck`` object as found, kept for the
    executor's probes.
    """

    command: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    binds: tuple[HostBind, ...] = ()
    writable: tuple[str, ...] = field(default_factory=tuple)
    entrypoint: tuple[str, ...] = ()
    user: str = ""
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    healthcheck: dict[str, object] | None = None

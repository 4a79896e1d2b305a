"""Settings read from the environment (the original design's variable names included)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from codex32.config.container import IsolationType, default_isolation
from codex32.errors import ConfigError

DEFAULT_STORAGE_DIR = "/var/lib/codex32"
#: Most sandboxes a pool may keep per shape (each is a monitor and a waiting PID 1).
MAX_SANDBOX_POOL = 64


def _find_templates_dir() -> Path:
    """The recipes: $CODEX32_TEMPLATES_DIR, else the ones shipped in the package.

    Package data (``codex32/rootfs-templates``), found through importlib.resources,
    so a wheel or ``pipx install`` works from any directory, as the checkout does.
    """
    explicit = os.environ.get("CODEX32_TEMPLATES_DIR")
    if explicit:
        return Path(explicit)
    return Path(str(resources.files("codex32").joinpath("rootfs-templates")))


@dataclass(frozen=True)
class Settings:
    """Where the engine keeps its state and how it isolates by default."""

    storage_dir: Path
    templates_dir: Path
    default_isolation: IsolationType
    userns_uid_base: int
    userns_size: int
    cgroup_parent: str = "codex32"

    @classmethod
    def from_env(
        cls, storage_dir: str | os.PathLike[str] | None = None, *, cgroup_parent: str | None = None
    ) -> Settings:
        """Read ``CODEX32_*`` (or the original ``CONTAINER_*``) variables.

        ``cgroup_parent`` (the CLI's ``--cgroup-parent``) wins over
        ``CODEX32_CGROUP_PARENT``; empty counts as not given, as an empty variable does.
        """
        env = os.environ
        storage = (
            storage_dir
            or env.get("CODEX32_STORAGE_DIR")
            or env.get("CONTAINER_STORAGE_DIR")
            or DEFAULT_STORAGE_DIR
        )
        isolation = default_isolation()
        base = _int_env("CODEX32_USERNS_UID_BASE", 100000)
        size = _int_env("CODEX32_USERNS_SIZE", 65536)
        if base < 1 or size < 1 or base + size > 2**32 - 1:
            raise ConfigError(
                f"user namespace range {base}+{size} is out of range",
                hint="set CODEX32_USERNS_UID_BASE >= 1 and CODEX32_USERNS_SIZE so the sum < 2^32",
            )
        return cls(
            cgroup_parent=cgroup_parent or env.get("CODEX32_CGROUP_PARENT") or "codex32",
            storage_dir=Path(storage).absolute(),
            templates_dir=_find_templates_dir(),
            default_isolation=isolation,
            userns_uid_base=base,
            userns_size=size,
        )

    def to_env(self) -> dict[str, str]:
        """These settings as the variables ``from_env`` reads: for engine processes
        started on this engine's behalf (a monitor's restart runs one)."""
        return {
            "CODEX32_STORAGE_DIR": str(self.storage_dir),
            "CODEX32_TEMPLATES_DIR": str(self.templates_dir),
            "CODEX32_ISOLATION_LEVEL": self.default_isolation.value,
            "CODEX32_USERNS_UID_BASE": str(self.userns_uid_base),
            "CODEX32_USERNS_SIZE": str(self.userns_size),
            "CODEX32_CGROUP_PARENT": self.cgroup_parent,
        }


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number") from None


def check_pool_size(size: int, source: str) -> int:
    """A sandbox pool size (``_engine.pool``), or the one-line error naming ``source``."""
    if not 0 <= size <= MAX_SANDBOX_POOL:
        raise ConfigError(
            f"{source}={size}: a sandbox pool size is 0 (no pool) to {MAX_SANDBOX_POOL}",
            hint=f"give {source} a whole number from 0 to {MAX_SANDBOX_POOL}",
        )
    return size


def pool_size_from_env(default: int = 0) -> int:
    """``CODEX32_SANDBOX_POOL``, checked; ``default`` when unset or empty. Read only by
    the engines that keep a pool (the library's, the service's), not by the CLI's."""
    return check_pool_size(_int_env("CODEX32_SANDBOX_POOL", default), "CODEX32_SANDBOX_POOL")

"""What callers of the service may ask for: the operator's policy, checked on every create.

The service runs as root and takes configs from whoever can reach its socket, so
each config is held against the policy before the engine sees it (the Docker
socket's configs too, once translated). The policy file is TOML
(``/etc/codex32/policy.toml``, or ``codex32 serve --policy``); a missing default
file means the defaults below, which allow no host path, no MINIMAL, no added
capability, no host network and nothing privileged.

Volume sources are resolved (symlinks included) before the check, and the engine
binds the resolved path by file descriptor, opened with ``RESOLVE_NO_SYMLINKS``: a
symlink swapped in after the check makes the mount fail instead of redirecting it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from codex32 import Codex32Error, ConfigError, ContainerConfig, IsolationType

DEFAULT_POLICY_PATH = Path("/etc/codex32/policy.toml")

_ORDER = {IsolationType.MINIMAL: 0, IsolationType.STANDARD: 1, IsolationType.STRICT: 2}


class PolicyDenied(Codex32Error):  # noqa: N818 - the name the brief and Docker's authz use
    """A config the operator's policy does not allow (HTTP 403); ``rule`` names the rule."""

    def __init__(self, rule: str, message: str, *, hint: str | None = None) -> None:
        self.rule = rule
        super().__init__(f"denied by policy rule {rule}: {message}", hint=hint)


class Limits(BaseModel):
    """Maximum resources a container may ask for; a config that asks none gets these."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_bytes: int | None = Field(default=None, ge=6 * 1024 * 1024)
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, ge=1)

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        from codex32.config.container import parse_size

        return parse_size(value) if isinstance(value, str) else value


class Policy(BaseModel):
    """The rules. Field names are the TOML keys (see docs/service.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Host directories whose contents callers may bind (resolved when loaded).
    volume_roots: tuple[str, ...] = ()
    #: The lowest isolation level a caller may ask for.
    min_isolation: IsolationType = IsolationType.STANDARD
    #: Capabilities a caller may add (``cap_add``), as ``CAP_NET_ADMIN`` or ``NET_ADMIN``.
    allowed_capabilities: frozenset[str] = frozenset()
    #: Whether ``network: host`` (and MINIMAL's default, the host's network) is allowed.
    allow_host_network: bool = False
    #: Whether ``cap_add: [ALL]`` (Docker's ``--privileged``) is allowed.
    allow_privileged: bool = False
    limits: Limits = Field(default_factory=Limits)

    @field_validator("volume_roots")
    @classmethod
    def _roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        roots = []
        for root in value:
            if not root.startswith("/"):
                raise ValueError(f"volume root {root!r} must be an absolute path")
            roots.append(os.path.realpath(root))
        return tuple(roots)

    @field_validator("allowed_capabilities", mode="before")
    @classmethod
    def _caps(cls, value: Any) -> Any:
        from codex32.config.container import ALL_CAPABILITIES

        names = set()
        for cap in value:
            name = str(cap).strip().upper()
            name = name if name.startswith("CAP_") else "CAP_" + name
            if name not in ALL_CAPABILITIES:
                raise ValueError(f"unknown capability {cap!r}: see capabilities(7)")
            names.add(name)
        return frozenset(names)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> Policy:
        """The policy in ``path``; without one, ``/etc/codex32/policy.toml`` if it exists,
        else the defaults. An explicit path that does not exist is an error."""
        explicit = path is not None
        file = Path(path) if path is not None else DEFAULT_POLICY_PATH
        try:
            text = file.read_text()
        except FileNotFoundError:
            if explicit:
                raise ConfigError(
                    f"policy file {file} does not exist", hint="create it, or drop --policy"
                ) from None
            return cls()
        except OSError as exc:
            raise ConfigError(f"cannot read the policy file {file}", errno=exc.errno) from None
        try:
            return cls.model_validate(tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"policy file {file} is not valid TOML: {exc}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top)"
            raise ConfigError(f"policy file {file}: {where}: {first['msg']}") from None

    def check(self, config: ContainerConfig) -> ContainerConfig:
        """The config to create if the policy allows it (limits the caller left unset
        become the policy's maximums); else ``PolicyDenied`` naming the first rule."""
        self._check_isolation(config)
        self._check_privileges(config)
        self._check_network(config)
        for source in _host_paths(config):
            self._check_source(source)
        return self._check_limits(config)

    # -- rules -------------------------------------------------------------------

    def _check_isolation(self, config: ContainerConfig) -> None:
        if _ORDER[config.isolation] < _ORDER[self.min_isolation]:
            raise PolicyDenied(
                "min_isolation",
                f"isolation {config.isolation.value} is below the lowest allowed, "
                f"{self.min_isolation.value}",
                hint=f"ask for {self.min_isolation.value} or stricter",
            )

    def _check_privileges(self, config: ContainerConfig) -> None:
        if "ALL" in config.cap_add:
            if not self.allow_privileged:
                raise PolicyDenied(
                    "allow_privileged",
                    "adding every capability (privileged) is not allowed",
                    hint="add only the capabilities the command needs",
                )
            return
        refused = sorted(set(config.cap_add) - self.allowed_capabilities)
        if refused:
            allowed = ", ".join(sorted(self.allowed_capabilities)) or "none"
            raise PolicyDenied(
                "allowed_capabilities",
                f"adding {', '.join(refused)} is not allowed",
                hint=f"capabilities that may be added: {allowed}",
            )

    def _check_network(self, config: ContainerConfig) -> None:
        if self.allow_host_network:
            return
        # No network named: MINIMAL's default is the host's (see docs/isolation.md).
        default_host = config.network is None and config.isolation is IsolationType.MINIMAL
        if config.network == "host" or default_host:
            raise PolicyDenied(
                "allow_host_network",
                "the host's network namespace is not allowed",
                hint="use a network of the container's own (bridge, none, or a named one)",
            )

    def _check_source(self, source: str) -> None:
        resolved = resolve_host_path(source)
        if not any(_within(resolved, root) for root in self.volume_roots):
            roots = ", ".join(self.volume_roots) or "none"
            raise PolicyDenied(
                "volume_roots",
                f"host path {source} (resolved: {resolved}) is outside the allowed roots",
                hint=f"bind something under: {roots}",
            )

    def _check_limits(self, config: ContainerConfig) -> ContainerConfig:
        maximums = self.limits
        resources = config.resources
        if resources.best_effort and maximums != Limits():
            raise PolicyDenied(
                "limits",
                "best-effort limits are not allowed: the policy sets maximums",
                hint="drop best_effort (--limits enforce)",
            )
        update: dict[str, Any] = {}
        for field, name, unit in (
            ("memory_bytes", "memory_bytes", "bytes"),
            ("cpus", "cpus", "CPUs"),
            ("pids_limit", "pids", "processes"),
        ):
            maximum = getattr(maximums, name)
            if maximum is None:
                continue
            asked = getattr(resources, field)
            if asked is None:
                update[field] = maximum
            elif asked > maximum:
                raise PolicyDenied(
                    f"limits.{name}",
                    f"{field} {asked} is above the maximum, {maximum} {unit}",
                    hint=f"ask for at most {maximum}",
                )
        if not update:
            return config
        return config.model_copy(update={"resources": resources.model_copy(update=update)})


def resolve_host_path(path: str) -> str:
    """Where ``path`` leads now, symlinks followed (via the descriptor the kernel opened,
    so the answer is the file itself, not a string that could be re-resolved)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"host path {path} cannot be opened", errno=exc.errno) from None
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _host_paths(config: ContainerConfig) -> list[str]:
    """Every host path a config would bind: its volumes, and a script image's folder."""
    paths = [volume.source for volume in config.volumes]
    if config.image.startswith("/"):
        paths.append(os.path.dirname(config.image))
    return paths

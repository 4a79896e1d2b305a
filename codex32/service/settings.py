"""How the service is run: where it listens, with which token, policy and audit log."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from codex32 import ConfigError

DEFAULT_HOST = "unix:///run/codex32/codex32.sock"
DEFAULT_DOCKER_SOCKET = "/run/codex32/docker.sock"
TOKEN_FILE_NAME = "service.token"
AUDIT_FILE_NAME = "audit.jsonl"


def socket_path(host: str) -> Path:
    """The path in ``unix:///run/x.sock`` (or a bare absolute path)."""
    if host.startswith("unix://"):
        host = host[len("unix://") :]
    if not host.startswith("/"):
        raise ConfigError(
            f"host {host!r} is not a unix socket",
            hint="use unix:///path/to.sock (for TCP use --listen HOST:PORT)",
        )
    return Path(host)


#: Sandboxes per shape the service keeps ready unless told otherwise.
DEFAULT_SERVICE_POOL = 2


@dataclass(frozen=True)
class ServiceSettings:
    """Everything ``codex32 serve`` was given (flags over ``CODEX32_*`` variables)."""

    #: The unix socket of the native API (``CODEX32_HOST`` / ``--host``).
    socket: Path = Path(DEFAULT_HOST[len("unix://") :])
    #: ``HOST:PORT`` for TCP (``--listen``); refused without a token.
    listen: str | None = None
    #: The engine's storage directory (``None``: the engine's default).
    storage_dir: Path | None = None
    #: The policy file (``None``: /etc/codex32/policy.toml if it exists).
    policy_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Group owning the unix sockets (mode ``socket_mode``).
    socket_group: str | None = "codex32"
    socket_mode: int = 0o660
    #: The Docker-compatible socket (``None``: not started).
    docker_socket: Path | None = Path(DEFAULT_DOCKER_SOCKET)
    #: Sandboxes kept ready per shape (``--sandbox-pool``, ``CODEX32_SANDBOX_POOL``): a
    #: long-lived service is where a pool pays; 0 turns it off.
    sandbox_pool: int = DEFAULT_SERVICE_POOL
    #: Extra options for the extra servers, by name (free-form, for their own flags).
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> ServiceSettings:
        """Defaults, then ``CODEX32_HOST`` / ``CODEX32_DOCKER_SOCKET``, then ``overrides``
        (``None`` values are ignored, so CLI flags left out do not override)."""
        values: dict[str, object] = {}
        host = os.environ.get("CODEX32_HOST")
        if host:
            values["socket"] = socket_path(host)
        docker = os.environ.get("CODEX32_DOCKER_SOCKET")
        if docker is not None:
            values["docker_socket"] = Path(docker) if docker else None
        storage = os.environ.get("CODEX32_STORAGE_DIR") or os.environ.get("CONTAINER_STORAGE_DIR")
        if storage:
            values["storage_dir"] = Path(storage)
        from codex32.settings import check_pool_size, pool_size_from_env

        values["sandbox_pool"] = pool_size_from_env(DEFAULT_SERVICE_POOL)
        pool = overrides.get("sandbox_pool")
        if isinstance(pool, int):
            check_pool_size(pool, "--sandbox-pool")
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        if (settings.tls_cert is None) != (settings.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together", hint="give both, or neither")
        if settings.tls_cert is not None and settings.listen is None:
            raise ConfigError("TLS is for TCP", hint="add --listen HOST:PORT, or drop --tls-*")
        return settings

    def state_dir(self) -> Path:
        """The engine's storage directory (where the token and the audit log live)."""
        if self.storage_dir is not None:
            return self.storage_dir.absolute()
        from codex32.settings import DEFAULT_STORAGE_DIR

        return Path(DEFAULT_STORAGE_DIR)

    @property
    def token_file(self) -> Path:
        return self.state_dir() / TOKEN_FILE_NAME

    @property
    def audit_file(self) -> Path:
        return self.state_dir() / AUDIT_FILE_NAME

"""The executor's public models, in the original design's names.

A ``Bot`` says what runs (its code, arguments, environment); its ``DeploymentConfig``
says where and how (``deployment_type``, isolation, limits, restart policy, health
check). Moving a bot from a plain process into a container is one field:
``bot.deployment_config.deployment_type = DeploymentType.CUSTOM_CONTAINER``.
"""

from __future__ import annotations

import re
import time
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from codex32 import IsolationType, ResourceLimits, RestartPolicy, Ulimit, Volume

#: Bot names are DNS labels: they name containers and Kubernetes objects as they are.
BOT_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"


class DeploymentType(StrEnum):
    """Where a bot runs (the original design's names)."""

    LOCAL_PROCESS = "local_process"
    CUSTOM_CONTAINER = "custom_container"
    KUBERNETES_POD = "kubernetes_pod"

    @classmethod
    def parse(cls, text: str) -> DeploymentType:
        """``process``/``local``, ``container``, ``pod``/``kubernetes`` or the full names."""
        aliases = {
            "process": cls.LOCAL_PROCESS,
            "local": cls.LOCAL_PROCESS,
            "container": cls.CUSTOM_CONTAINER,
            "pod": cls.KUBERNETES_POD,
            "kubernetes": cls.KUBERNETES_POD,
            "k8s": cls.KUBERNETES_POD,
        }
        key = text.strip().lower().replace("-", "_")
        if key in aliases:
            return aliases[key]
        try:
            return cls(key)
        except ValueError:
            raise ValueError(
                f"unknown deployment type {text!r}: use process, container or pod"
            ) from None


class HealthState(StrEnum):
    """Docker's health states (``none``: the bot has no health check)."""

    NONE = "none"
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class RunState(StrEnum):
    """Where one run of a bot is in its life."""

    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"  # ended by itself, exit code known
    STOPPED = "stopped"  # ended by a stop of the user
    LOST = "lost"  # gone while nobody watched, exit code unknown (a reboot, a kill -9)
    FAILED = "failed"  # never started (bad image, bad code path)


LIVE_RUN_STATES = frozenset({RunState.STARTING, RunState.RUNNING})


class ExecProbe(BaseModel):
    """Run a command (in the container, or next to the process); exit 0 is healthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["exec"] = "exec"
    command: list[str] = Field(min_length=1)


class HttpProbe(BaseModel):
    """GET ``http://HOST:port/path``; a 2xx or 3xx answer is healthy (as Kubernetes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http"] = "http"
    port: int = Field(ge=1, le=65535)
    path: str = "/"
    host: str | None = None  # default: where the bot runs (127.0.0.1, the container's IP)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"HTTP probe path {value!r} must start with '/'")
        return value


class TcpProbe(BaseModel):
    """Connect to ``HOST:port``; an accepted connection is healthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["tcp"] = "tcp"
    port: int = Field(ge=1, le=65535)
    host: str | None = None


Probe = Annotated[ExecProbe | HttpProbe | TcpProbe, Field(discriminator="type")]


class HealthCheck(BaseModel):
    """Docker's HEALTHCHECK and Kubernetes' probe settings, in seconds.

    Failures during ``start_period`` do not count (a success ends it early);
    ``retries`` failures in a row make the bot unhealthy. An unhealthy bot is
    restarted when ``restart_on_unhealthy`` and its restart policy is not ``no``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    probe: Probe
    interval: float = Field(default=30.0, gt=0, le=86400)
    timeout: float = Field(default=30.0, gt=0, le=3600)
    retries: int = Field(default=3, ge=1, le=1000)
    start_period: float = Field(default=0.0, ge=0, le=86400)
    restart_on_unhealthy: bool = True


class DeploymentConfig(BaseModel):
    """How and where a bot runs; ``deployment_type`` picks the backend."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    deployment_type: DeploymentType = DeploymentType.LOCAL_PROCESS
    isolation: IsolationType = IsolationType.STANDARD
    resources: ResourceLimits = Field(default_factory=ResourceLimits)
    ulimits: list[Ulimit] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    health_check: HealthCheck | None = None
    #: Container backends: the engine's template (the bot's code is bound into it).
    image: str = "python"
    #: Kubernetes: the image the pod runs, its namespace, and replicas (> 1: a Deployment).
    kubernetes_image: str = "python:3.11-slim"
    namespace: str = "default"
    replicas: int = Field(default=1, ge=1, le=1000)
    #: Container networks (None: the engine's default for the isolation level).
    network: str | None = None
    stop_timeout: int = Field(default=10, ge=0, le=3600)
    #: LOCAL_PROCESS: run as this user (name or uid) instead of the executor's.
    user: str | None = None
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    log_max_files: int = Field(default=3, ge=1, le=100)

    @field_validator("restart_policy", mode="before")
    @classmethod
    def _policy_text(cls, value: Any) -> Any:
        return RestartPolicy.parse(value) if isinstance(value, str) else value


class Bot(BaseModel):
    """A bot: its code (a script, or a directory with an entry point) and how it runs.

    ``secrets`` are references, never values: ``{"TOKEN": "env:BOT_TOKEN"}`` takes the
    value from the executor's environment, ``"file:/run/secrets/token"`` from a file,
    when the bot starts; the database keeps only the reference.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:16], pattern=r"^[0-9a-f]{8,32}$")
    name: str = Field(pattern=BOT_NAME_PATTERN)
    code: str = Field(min_length=1, description="a .py script, or a directory")
    entry_point: str = "main.py"
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    deployment_config: DeploymentConfig = Field(default_factory=DeploymentConfig)

    @field_validator("code")
    @classmethod
    def _absolute_code(cls, value: str) -> str:
        return str(Path(value).expanduser().absolute())

    @field_validator("env", "secrets")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("secrets")
    @classmethod
    def _references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, ref in value.items():
            if not ref.startswith(("env:", "file:")):
                raise ValueError(
                    f"secret {name}: {ref!r} is no reference; use env:VARIABLE or file:/path"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not re.fullmatch(
                r"([a-z0-9.-]+/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", key
            ):
                raise ValueError(f"label key {key!r} is not a Kubernetes label key")
            if not re.fullmatch(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?", text):
                raise ValueError(f"label {key}={text!r}: values are up to 63 of [A-Za-z0-9_.-]")
        return value

    @model_validator(mode="after")
    def _entry_point_relative(self) -> Bot:
        if Path(self.entry_point).is_absolute() or ".." in Path(self.entry_point).parts:
            raise ValueError("entry_point is a path inside the bot's directory")
        return self

    @property
    def code_dir(self) -> Path:
        """The directory bound into containers (a script's own directory)."""
        path = Path(self.code)
        return path if path.is_dir() else path.parent

    @property
    def script_name(self) -> str:
        """The file run, relative to ``code_dir``."""
        path = Path(self.code)
        return self.entry_point if path.is_dir() else path.name

    def check_code(self) -> None:
        """Refuse a bot whose code is missing, before anything is started."""
        from codex32 import ConfigError

        script = self.code_dir / self.script_name
        if not script.is_file():
            raise ConfigError(
                f"bot {self.name}: {script} does not exist",
                hint="give a .py file or a directory holding the entry point (main.py)",
            )


class BotRun(BaseModel):
    """One run of a bot: one process, one container start, or one pod."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = None
    bot_id: str
    number: int = Field(ge=1, description="1 for the bot's first run, then 2, 3, ...")
    deployment_type: DeploymentType
    state: RunState = RunState.STARTING
    health: HealthState = HealthState.NONE
    exit_code: int | None = None
    reason: str | None = None
    started_at: float = Field(default_factory=time.time)
    finished_at: float | None = None
    pid: int | None = None
    pid_start_time: float | None = None
    container_id: str | None = None
    pod_name: str | None = None
    #: What started it: ``user``, ``policy`` (restart after an exit), ``unhealthy``, ``recover``.
    trigger: str = "user"

    @property
    def live(self) -> bool:
        """Whether this run is (believed to be) still going."""
        return self.state in LIVE_RUN_STATES

    @property
    def where(self) -> str:
        """Where it runs, for tables: ``pid 123``, ``container 3f2a..``, ``pod x``."""
        if self.pod_name:
            return f"pod {self.pod_name}"
        if self.container_id:
            return f"container {self.container_id[:12]}"
        if self.pid:
            return f"pid {self.pid}"
        return "-"


class BotStatus(BaseModel):
    """What ``status`` answers: the bot, whether it should run, and its latest run."""

    bot: Bot
    desired: Literal["running", "stopped"]
    run: BotRun | None
    restarts: int = 0

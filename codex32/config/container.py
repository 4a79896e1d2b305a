"""Pydantic models of what a user asks for: data with validation, no behaviour.

Nothing here touches the OS except checking that a volume source exists and that a
throttled device is a whole-disk block device, which is part of refusing a bad config
before anything is created.
"""

from __future__ import annotations

import os
import re
import signal
import stat
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from codex32.config.capabilities import ALL_CAPABILITIES, normalize_capability
from codex32.config.network import (
    PortMapping,
    check_network_options,
    normalize_network,
    parse_rate,
    resolve_network,
)

NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
NAME_MAX = 128

_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE_MAX = 2**63 - 1

RLIMIT_NAMES = frozenset(
    {
        "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue",
        "nice", "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
    }
)  # fmt: skip

TMPFS_OPTIONS = frozenset({"rw", "ro", "nosuid", "suid", "nodev", "dev", "exec", "noexec"})

#: Where the kernel lists block devices by major:minor (a partition has a "partition" file).
SYS_DEV_BLOCK = "/sys/dev/block"

#: The largest rates blk-throttle stores: bytes/s in a u64, IOs/s in an unsigned int.
BPS_MAX = (1 << 64) - 1

#: Processes a container may have when its config sets no limit (podman's default):
#: a fork bomb stops there instead of filling the host's pid space. -1: unlimited.
DEFAULT_PIDS_LIMIT = 2048
#: Log rotation when the config names none: Docker's ``local`` driver's 20 MB x 5
#: (json-file's default is unbounded, which lets a container fill the host's disk).
DEFAULT_LOG_MAX_SIZE = 20 * 1024**2
DEFAULT_LOG_MAX_FILES = 5
IOPS_MAX = (1 << 32) - 1


class IsolationType(StrEnum):
    """How much a container is cut off from the host (see docs/isolation.md)."""

    MINIMAL = "minimal"
    STANDARD = "standard"
    STRICT = "strict"


def default_isolation() -> IsolationType:
    """The level a config gets when it names none: ``CODEX32_ISOLATION_LEVEL`` or the
    original design's ``CONTAINER_ISOLATION_LEVEL``, else STANDARD.

    Read when a config is made, so scripts and the CLI honour it alike.
    """
    variable = next(
        (v for v in ("CODEX32_ISOLATION_LEVEL", "CONTAINER_ISOLATION_LEVEL") if os.environ.get(v)),
        None,
    )
    if variable is None:
        return IsolationType.STANDARD
    level = os.environ[variable]
    try:
        return IsolationType(level.strip().lower())
    except ValueError:
        from codex32.errors import ConfigError

        raise ConfigError(
            f"{variable}={level!r} is not an isolation level",
            hint="use minimal, standard or strict",
        ) from None


def parse_size(value: str | int) -> int:
    """Parse a Docker-style size (``512m``, ``1g``, ``1048576``) into bytes."""
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*", value.lower())
        if not match:
            raise ValueError(
                f"invalid size {value!r}: use a number with an optional unit b, k, m, g"
            )
        number, unit = match.groups()
        size = int(float(number) * _SIZE_UNITS[unit])
    if size > _SIZE_MAX:  # the kernel's (and Docker's) sizes are signed 64-bit
        raise ValueError(f"size {value!r} is too large: at most {_SIZE_MAX} bytes (8 EiB)")
    return size


def signal_name(value: str | int) -> str:
    """Normalize ``TERM``, ``SIGTERM``, ``15`` to ``SIGTERM``; refuse unknown signals."""
    text = str(value).strip().upper()
    try:
        number = int(text)
    except ValueError:
        name = text if text.startswith("SIG") else "SIG" + text
        if name not in signal.Signals.__members__:
            raise ValueError(
                f"unknown signal {value!r}: use a name like SIGTERM or a number"
            ) from None
        return name
    try:
        return signal.Signals(number).name
    except ValueError:
        raise ValueError(f"unknown signal number {number}") from None


#: The largest uid or gid the kernel gives a user: (uid_t)-1, 4294967295, means "no id"
#: (setresuid leaves the id unchanged), so it and anything above are refused.
ID_MAX = 2**32 - 2

#: Mount targets refused: the root, and the kernel filesystems the set-up mounts
#: itself. /proc and /sys with everything below them (the masked and read-only paths
#: live there: a volume would undo them, or hide /proc from the set-up's later steps);
#: /dev itself only, as a socket such as /dev/log may be bound below it.
SHADOWED_TREES = ("/proc", "/sys")
SHADOWED_PATHS = ("/", "/dev")
#: What runc lets a bind cover below /proc (lxcfs's files).
PROC_ALLOWED = frozenset(
    {"/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
     "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev"}
)  # fmt: skip


def check_user_spec(spec: str) -> str:
    """``user[:group]`` as names or numbers; numbers as the kernel takes them.

    0 <= id <= 2^32 - 2: -1 as an unsigned 32-bit number (4294967295) is the
    kernel's "no change", with which the process would keep the set-up's uid 0.
    """
    parts = spec.split(":")
    if len(parts) > 2 or not all(re.fullmatch(r"[a-zA-Z0-9_.-]+", p) for p in parts):
        raise ValueError(
            f"user {spec!r} is not user[:group]: names or numbers of letters, digits, _ . -"
        )
    for part, what in zip(parts, ("uid", "gid"), strict=False):
        if part.isdigit() and int(part) > ID_MAX:
            raise ValueError(
                f"{what} {part} is out of range: ids go from 0 to {ID_MAX} "
                "(4294967295 is the kernel's 'no id')"
            )
    return spec


def check_no_newline(value: str, what: str) -> str:
    """Refuse NUL and line breaks: they would split a record or a mount option."""
    for char, name in (("\x00", "a NUL byte"), ("\n", "a newline"), ("\r", "a carriage return")):
        if char in value:
            raise ValueError(f"{what} {value!r} contains {name}")
    return value


def check_mount_target(target: str, what: str) -> str:
    """Refuse a mount over ``/``, ``/dev``, or ``/proc`` and ``/sys`` or below them.

    The set-up mounts those itself, masks paths below them and reads /proc after
    the mounts: a mount there would hide the container's root, undo a mask (a
    writable /proc/sys) or break the set-up later with an obscure error. As runc,
    lxcfs's files in /proc may be covered.
    """
    if target in SHADOWED_PATHS:
        place = "the container's root filesystem" if target == "/" else target
        raise ValueError(
            f"{what} {target!r} would hide {place}, which the engine sets up itself: "
            "choose another target"
        )
    for tree in SHADOWED_TREES:
        if (target == tree or target.startswith(tree + "/")) and target not in PROC_ALLOWED:
            raise ValueError(
                f"{what} {target!r} would cover {tree}, which the engine mounts and masks "
                "itself: choose a target outside /proc and /sys"
            )
    return target


def check_container_path(path: str, what: str) -> str:
    """Refuse relative paths, ``..`` components and line breaks in a container path."""
    if not path.startswith("/"):
        raise ValueError(f"{what} {path!r} must be an absolute path inside the container")
    check_no_newline(path, what)
    if ".." in PurePosixPath(path).parts:
        raise ValueError(f"{what} {path!r} must not contain '..'")
    normalized = os.path.normpath(path)
    return "/" + normalized.lstrip("/")


class Volume(BaseModel):
    """A host path bound into the container (``-v SOURCE:TARGET[:ro]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    target: str
    read_only: bool = False

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith("/"):
            raise ValueError(f"volume source {value!r} must be an absolute host path")
        check_no_newline(value, "volume source")
        if info.context and info.context.get("stored"):
            return value  # checked at create; at start the set-up process checks again
        if not os.path.exists(value):
            raise ValueError(
                f"volume source {value!r} does not exist: create it first, or fix the path"
            )
        return os.path.realpath(value)

    @field_validator("target")
    @classmethod
    def _target_absolute(cls, value: str) -> str:
        return check_mount_target(check_container_path(value, "volume target"), "volume target")

    @classmethod
    def parse(cls, spec: str) -> Volume:
        """Parse Docker's ``SOURCE:TARGET[:ro|rw]``."""
        parts = spec.split(":")
        if len(parts) == 2:
            return cls(source=parts[0], target=parts[1])
        if len(parts) == 3 and parts[2] in ("ro", "rw"):
            return cls(source=parts[0], target=parts[1], read_only=parts[2] == "ro")
        raise ValueError(f"invalid volume {spec!r}: use SOURCE:TARGET or SOURCE:TARGET:ro")


class TmpfsMount(BaseModel):
    """A tmpfs in the container (``--tmpfs /run:size=64m,mode=1777``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    size_bytes: int | None = Field(default=None, gt=0)
    mode: int = Field(default=0o1777, ge=0, le=0o7777)
    flags: tuple[str, ...] = ("nosuid", "nodev")

    @field_validator("target")
    @classmethod
    def _target_absolute(cls, value: str) -> str:
        return check_mount_target(check_container_path(value, "tmpfs target"), "tmpfs target")

    @field_validator("flags")
    @classmethod
    def _known_flags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - TMPFS_OPTIONS)
        if unknown:
            raise ValueError(f"unknown tmpfs option(s) {unknown}: use {sorted(TMPFS_OPTIONS)}")
        return value

    @classmethod
    def parse(cls, spec: str) -> TmpfsMount:
        """Parse Docker's ``TARGET[:opt,opt,size=N,mode=0755]``."""
        target, _, options = spec.partition(":")
        size: int | None = None
        mode = 0o1777
        flags: list[str] = ["nosuid", "nodev"]
        check_no_newline(options, "tmpfs options")
        for option in filter(None, options.split(",")):
            key, _, value = option.partition("=")
            if key == "size":
                size = parse_size(value)
            elif key == "mode":
                try:
                    mode = int(value, 8)
                except ValueError:
                    raise ValueError(
                        f"invalid tmpfs mode {value!r}: use octal, e.g. 1777"
                    ) from None
            else:
                flags.append(key)
        return cls(target=target, size_bytes=size, mode=mode, flags=tuple(flags))


class Ulimit(BaseModel):
    """A resource limit set with setrlimit (``--ulimit nofile=1024:2048``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    # -1 is RLIM_INFINITY; past 2^63-1 setrlimit would fail only at the start.
    soft: int = Field(ge=-1, le=_SIZE_MAX)
    hard: int = Field(ge=-1, le=_SIZE_MAX)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in RLIMIT_NAMES:
            raise ValueError(f"unknown ulimit {value!r}: use one of {sorted(RLIMIT_NAMES)}")
        return value

    @model_validator(mode="after")
    def _soft_below_hard(self) -> Ulimit:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError(f"ulimit {self.name}: soft limit {self.soft} exceeds hard {self.hard}")
        return self

    @classmethod
    def parse(cls, spec: str) -> Ulimit:
        """Parse Docker's ``NAME=SOFT[:HARD]`` (``-1`` or ``unlimited`` for no limit)."""
        name, sep, values = spec.partition("=")
        if not sep:
            raise ValueError(f"invalid ulimit {spec!r}: use NAME=SOFT[:HARD]")
        soft_text, _, hard_text = values.partition(":")

        def number(text: str) -> int:
            if text == "unlimited":
                return -1
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"invalid ulimit value {text!r} in {spec!r}") from None

        soft = number(soft_text)
        return cls(name=name, soft=soft, hard=number(hard_text) if hard_text else soft)


def check_block_device(path: str) -> str:
    """Refuse anything but a whole-disk block device node; return its resolved path.

    The kernel throttles whole disks only (a partition's major:minor fails with
    ENODEV when the limit is written), so a partition is refused here, naming its disk.
    """
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError as exc:
        raise ValueError(
            f"device {path!r} cannot be used ({exc.strerror}): give an existing block "
            "device, e.g. /dev/sda (lsblk lists them)"
        ) from None
    if not stat.S_ISBLK(info.st_mode):
        raise ValueError(
            f"{path!r} is not a block device: give a disk's device node, e.g. /dev/sda "
            "(lsblk lists them)"
        )
    number = f"{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}"
    entry = os.path.join(SYS_DEV_BLOCK, number)
    if os.path.exists(os.path.join(entry, "partition")):
        disk = os.path.basename(os.path.dirname(os.path.realpath(entry)))
        raise ValueError(
            f"{path!r} is a partition ({number}): the kernel throttles whole disks only, "
            f"so limit /dev/{disk} instead"
        )
    return real


class DeviceRate(BaseModel):
    """A rate limit on one host block device (``--device-write-bps /dev/sda:1mb``).

    The path is kept as given and turned into major:minor when the limit is applied,
    at every start (as Docker does): the numbers of loop, dm and nvme devices change
    across reboots, paths such as ``/dev/disk/by-id/...`` do not. The rate is bytes
    or IOs per second, by the list it is in (``ResourceLimits.device_*``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    rate: int

    @field_validator("path")
    @classmethod
    def _block_device(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith("/"):
            raise ValueError(f"device {value!r} must be an absolute host path, e.g. /dev/sda")
        if "\x00" in value:
            raise ValueError(f"device {value!r} contains a NUL byte")
        if info.context and info.context.get("stored"):
            return value  # checked at create; resolved again when the limit is applied
        check_block_device(value)
        return os.path.normpath(value)

    @field_validator("rate")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(
                f"rate {value} must be above 0 (to leave a device unlimited, do not list it)"
            )
        return value

    @classmethod
    def parse(cls, spec: str, *, iops: bool = False) -> DeviceRate:
        """Parse Docker's ``PATH:RATE`` (bytes/s: ``1mb``, ``512kb``) or ``PATH:N`` (IOs/s)."""
        path, sep, text = spec.rpartition(":")
        example = "/dev/sda:100" if iops else "/dev/sda:1mb"
        if not sep or not path or not text:
            raise ValueError(
                f"invalid device limit {spec!r}: use {'PATH:N' if iops else 'PATH:RATE'}, "
                f"e.g. {example}"
            )
        if iops:
            if not re.fullmatch(r"[0-9]+", text.strip()):
                raise ValueError(
                    f"invalid IO rate {text!r} in {spec!r}: use a whole number of IOs per "
                    f"second, e.g. {example}"
                )
            rate = int(text)
        else:
            try:
                rate = parse_size(text)
            except ValueError:
                raise ValueError(
                    f"invalid rate {text!r} in {spec!r}: use bytes per second with an "
                    f"optional unit kb, mb or gb, e.g. {example}"
                ) from None
        return cls(path=path, rate=rate)


class DeviceMapping(BaseModel):
    """A host device node given to the container (``--device HOST[:CONTAINER[:PERMS]]``).

    It is bound into the container and allowed in its device rules with ``PERMS``
    (a subset of ``rwm``: read, write, mknod; ``rwm`` by default, as Docker's).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_path: str
    #: Where it appears in the container; the host path when not given.
    container_path: str = Field(default="", validate_default=True)
    permissions: str = "rwm"

    @field_validator("host_path")
    @classmethod
    def _device_node(cls, value: str, info: ValidationInfo) -> str:
        if not value.startswith("/"):
            raise ValueError(f"device {value!r} must be an absolute host path, e.g. /dev/fuse")
        check_no_newline(value, "device")
        if info.context and info.context.get("stored"):
            return value  # checked at create; read again at every start
        real = os.path.realpath(value)
        try:
            mode = os.stat(real).st_mode
        except OSError as exc:
            raise ValueError(f"device {value!r} cannot be used: {exc.strerror}") from None
        if not (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)):
            raise ValueError(f"{value!r} is not a device node: give one such as /dev/fuse")
        return real

    @field_validator("permissions")
    @classmethod
    def _access(cls, value: str) -> str:
        if not value or set(value) - set("rwm") or len(set(value)) != len(value):
            raise ValueError(f"device permissions {value!r}: use letters of rwm, e.g. rw")
        return "".join(c for c in "rwm" if c in value)

    @field_validator("container_path")
    @classmethod
    def _target(cls, value: str, info: ValidationInfo) -> str:
        target = value or str(info.data.get("host_path") or "")
        if not target:
            return value  # the host path was refused: that error is the one to show
        return check_mount_target(check_container_path(target, "device target"), "device target")

    @classmethod
    def parse(cls, spec: str) -> DeviceMapping:
        """Parse Docker's ``HOST[:CONTAINER[:PERMS]]`` (``/dev/fuse``, ``/dev/sdb:/dev/xvdc:r``)."""
        parts = spec.split(":")
        if len(parts) > 3 or not parts[0]:
            raise ValueError(
                f"invalid device {spec!r}: use HOST[:CONTAINER[:PERMS]], e.g. /dev/fuse"
            )
        if len(parts) == 2 and not parts[1].startswith("/"):  # HOST:PERMS, as Docker
            return cls(host_path=parts[0], permissions=parts[1])
        return cls(
            host_path=parts[0],
            container_path=parts[1] if len(parts) > 1 else "",
            permissions=parts[2] if len(parts) > 2 else "rwm",
        )


#: The per-device limit lists of ResourceLimits; the IOs/s ones end in "_iops".
DEVICE_LIMITS = ("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops")


class ResourceLimits(BaseModel):
    """cgroup limits (enforced by the cgroup drivers) and per-process limits."""

    model_config = ConfigDict(extra="forbid")

    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU quota in cores")
    cpu_shares: int | None = Field(default=None, ge=2, le=262144)
    cpuset_cpus: str | None = Field(default=None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
    memory_bytes: int | None = Field(default=None, ge=6 * 1024 * 1024)
    memory_swap_bytes: int | None = Field(default=None, ge=-1)
    memory_reservation_bytes: int | None = Field(default=None, gt=0)
    #: None: the engine's default (DEFAULT_PIDS_LIMIT) where the host has a pids
    #: controller; -1 (or 0, as Docker): unlimited.
    pids_limit: int | None = Field(default=None, ge=-1)
    blkio_weight: int | None = Field(default=None, ge=10, le=1000)
    max_open_files: int | None = Field(default=None, ge=1, le=1 << 20)
    # Per-device throttles (Docker's --device-{read,write}-{bps,iops}); bytes or IOs/s.
    device_read_bps: list[DeviceRate] = Field(default_factory=list)
    device_write_bps: list[DeviceRate] = Field(default_factory=list)
    device_read_iops: list[DeviceRate] = Field(default_factory=list)
    device_write_iops: list[DeviceRate] = Field(default_factory=list)
    #: Enforce what the host can and warn about the rest (dropped from the config),
    #: instead of refusing the container (``--limits best-effort``).
    best_effort: bool = False

    @field_validator("pids_limit")
    @classmethod
    def _pids(cls, value: int | None) -> int | None:
        return -1 if value == 0 else value

    @field_validator("memory_bytes", "memory_swap_bytes", "memory_reservation_bytes", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() == "-1":
            return -1
        return parse_size(value) if isinstance(value, str | int) else value

    @field_validator(*DEVICE_LIMITS, mode="before")
    @classmethod
    def _device_specs(cls, value: Any, info: ValidationInfo) -> Any:
        """Docker's ``PATH:RATE`` strings are accepted as list items too."""
        if not isinstance(value, list):
            return value
        iops = str(info.field_name).endswith("_iops")
        return [DeviceRate.parse(v, iops=iops) if isinstance(v, str) else v for v in value]

    @field_validator(*DEVICE_LIMITS)
    @classmethod
    def _device_rates(cls, value: list[DeviceRate], info: ValidationInfo) -> list[DeviceRate]:
        top = IOPS_MAX if str(info.field_name).endswith("_iops") else BPS_MAX
        for item in value:
            if item.rate > top:
                raise ValueError(
                    f"rate {item.rate} for {item.path} is above the kernel's maximum {top}"
                )
        if not (info.context and info.context.get("stored")):
            devices = [os.path.realpath(item.path) for item in value]
            duplicates = sorted({d for d in devices if devices.count(d) > 1})
            if duplicates:
                raise ValueError(f"device {duplicates[0]} is given more than once")
        return value

    @model_validator(mode="after")
    def _swap_above_memory(self) -> ResourceLimits:
        swap, memory = self.memory_swap_bytes, self.memory_bytes
        if swap is not None and swap != -1:
            if memory is None:
                raise ValueError("memory_swap needs memory to be set too (as in Docker)")
            if swap < memory:
                raise ValueError("memory_swap must be at least memory (it counts memory + swap)")
        return self


RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")


class RestartPolicy(BaseModel):
    """What the monitor does when the container exits (Docker's ``--restart``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "no"
    maximum_retry_count: int = Field(default=0, ge=0)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in RESTART_POLICIES:
            raise ValueError(f"unknown restart policy {value!r}: use one of {RESTART_POLICIES}")
        return value

    @model_validator(mode="after")
    def _count_only_on_failure(self) -> RestartPolicy:
        if self.maximum_retry_count and self.name != "on-failure":
            raise ValueError("a maximum retry count goes with on-failure only (on-failure:N)")
        return self

    @classmethod
    def parse(cls, spec: str) -> RestartPolicy:
        """Parse ``no``, ``always``, ``unless-stopped``, ``on-failure[:N]``."""
        name, _, count = spec.partition(":")
        if count and not count.isdigit():
            raise ValueError(f"invalid restart policy {spec!r}: the count must be a number")
        return cls(name=name, maximum_retry_count=int(count or 0))


EnvName = Annotated[str, Field(pattern=r"^[^=\x00]+$")]


class ContainerConfig(BaseModel):
    """Everything a container is created from (the original design's public model)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=NAME_MAX, pattern=NAME_PATTERN)
    image: str = Field(min_length=1, description="rootfs template name or image reference")
    command: list[str] = Field(default_factory=list)
    #: None: the image's Entrypoint; a list (``[]`` for ``--entrypoint ""``) replaces it
    #: and, as in Docker, drops the image's Cmd.
    entrypoint: list[str] | None = None
    env: dict[EnvName, str] = Field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$"
    )
    isolation: IsolationType = Field(default_factory=default_isolation)
    volumes: list[Volume] = Field(default_factory=list)
    tmpfs: list[TmpfsMount] = Field(default_factory=list)
    #: Host devices given to the container (Docker's ``--device``).
    devices: list[DeviceMapping] = Field(default_factory=list)
    read_only: bool = False
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    ulimits: list[Ulimit] = Field(default_factory=list)
    init: bool = False
    auto_remove: bool = False
    tty: bool = False
    restart_policy: RestartPolicy = Field(default_factory=RestartPolicy)
    stop_signal: str = "SIGTERM"
    stop_timeout: int = Field(default=10, ge=0, le=3600)
    #: Rotate the log at this size (None: never; "-1" or -1 given: never).
    log_max_size: int | None = Field(default=DEFAULT_LOG_MAX_SIZE, ge=4096)
    log_max_files: int = Field(default=DEFAULT_LOG_MAX_FILES, ge=1, le=100)
    resources: ResourceLimits = Field(default_factory=ResourceLimits)
    # None: the isolation level's default (see _netconfig); rates in bit/s.
    network: str | None = None
    ports: list[PortMapping] = Field(default_factory=list)
    #: ``-P``: publish every port the image exposes on a free host port.
    publish_all: bool = False
    network_egress_rate: int | None = None
    network_ingress_rate: int | None = None
    #: Free-form metadata (Docker's labels): filters and tools use it, the engine not.
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        return None if value is None else normalize_network(value)

    @field_validator("ports", mode="before")
    @classmethod
    def _ports(cls, value: Any) -> Any:
        if isinstance(value, list):  # Docker's spellings are accepted too: "8080:80/tcp"
            return [PortMapping.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("network_egress_rate", "network_ingress_rate", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        return value if value is None else parse_rate(value)

    @field_validator("log_max_size", mode="before")
    @classmethod
    def _log_size(cls, value: Any) -> Any:
        if value in (-1, "-1"):
            return None
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, value: str) -> str:
        return signal_name(value)

    @field_validator("image")
    @classmethod
    def _image_name(cls, value: str) -> str:
        # A template name, a bot's .py path, or an image reference / id (the engine
        # parses references: [REGISTRY/]NAME[:TAG][@sha256:DIGEST]).
        if (
            not re.fullmatch(NAME_PATTERN, value)
            and not value.startswith("/")
            and not re.fullmatch(r"[a-zA-Z0-9][\w.:/@\[\]-]*", value)
        ):
            raise ValueError(
                f"image {value!r} is neither a template name ([a-zA-Z0-9][a-zA-Z0-9_.-]*) "
                "nor an image reference ([REGISTRY/]NAME[:TAG][@DIGEST])"
            )
        return value

    @field_validator("command")
    @classmethod
    def _no_nul(cls, value: list[str]) -> list[str]:
        if any("\x00" in arg for arg in value):
            raise ValueError("command arguments must not contain NUL bytes")
        if value and not value[0]:
            raise ValueError("the command must not be empty")
        return value

    @field_validator("env")
    @classmethod
    def _env_values(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            check_no_newline(key, "environment variable name")
        if any("\x00" in v for v in value.values()):
            raise ValueError("environment values must not contain NUL bytes")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        return None if value is None else check_user_spec(value)

    @field_validator("working_dir")
    @classmethod
    def _workdir_absolute(cls, value: str | None) -> str | None:
        return None if value is None else check_container_path(value, "working directory")

    @field_validator("cap_add", "cap_drop")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        return [normalize_capability(cap) for cap in value]

    @model_validator(mode="after")
    def _consistent(self) -> ContainerConfig:
        check_network_options(
            resolve_network(self.network, self.isolation.value),
            self.ports, self.network_egress_rate, self.network_ingress_rate,
        )  # fmt: skip
        if self.hostname and self.isolation is IsolationType.MINIMAL:
            raise ValueError(
                "a hostname needs a UTS namespace of its own, and MINIMAL shares the host's "
                "(as docker run --uts=host refuses -h): use STANDARD or drop the hostname"
            )
        if self.auto_remove and self.restart_policy.name != "no":
            raise ValueError("--rm and a restart policy exclude each other (as in Docker)")
        targets = [v.target for v in self.volumes] + [t.target for t in self.tmpfs]
        targets += [d.container_path for d in self.devices]
        duplicates = sorted({t for t in targets if targets.count(t) > 1})
        if duplicates:
            raise ValueError(f"more than one mount targets {duplicates}")
        names = [u.name for u in self.ulimits]
        if len(names) != len(set(names)):
            raise ValueError("each ulimit may be given once")
        return self


__all__ = [
    "ALL_CAPABILITIES",
    "ContainerConfig",
    "DeviceMapping",
    "DeviceRate",
    "IsolationType",
    "PortMapping",
    "ResourceLimits",
    "RestartPolicy",
    "TmpfsMount",
    "Ulimit",
    "Volume",
    "parse_size",
]

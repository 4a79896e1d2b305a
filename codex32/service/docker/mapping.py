"""Docker's create body -> ``ContainerConfig``, refusing what Codex-32 cannot honour.

Three kinds of fields (the table in docs/docker-compat.md):

* mapped: turned into the config's fields (``MAPPED_CONFIG``, ``MAPPED_HOST``);
* ignored: client-side hints or metadata that change nothing at run time
  (``IGNORED_CONFIG``, ``IGNORED_HOST``), or a field left at its zero value;
* refused: any other field with a value: a 400 naming it, never dropped silently.
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import ValidationError

from codex32 import (
    ConfigError,
    ContainerConfig,
    IsolationType,
    PortMapping,
    ResourceLimits,
    RestartPolicy,
    TmpfsMount,
    Ulimit,
    Volume,
)

from .wire import DockerAPIError

#: The label that picks a container's isolation level on the Docker socket.
ISOLATION_LABEL = "codex32.isolation"

MAPPED_CONFIG = frozenset(
    {
        "Image",
        "Cmd",
        "Entrypoint",
        "Env",
        "WorkingDir",
        "User",
        "Hostname",
        "Labels",
        "Tty",
        "OpenStdin",
        "StopSignal",
        "StopTimeout",
        "NetworkDisabled",
    }
)
#: Client-side hints (which streams to attach) and metadata with no run-time effect.
IGNORED_CONFIG = frozenset(
    {
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "StdinOnce",
        "ExposedPorts",
        "Domainname",
        "ArgsEscaped",
        "OnBuild",
        "Shell",
        "MacAddress",
        "HostConfig",
        "NetworkingConfig",
        "Volumes",
        "Healthcheck",
    }
)
MAPPED_HOST = frozenset(
    {
        "Binds",
        "Mounts",
        "Tmpfs",
        "Memory",
        "MemorySwap",
        "MemoryReservation",
        "NanoCpus",
        "CpuQuota",
        "CpuPeriod",
        "CpuShares",
        "CpusetCpus",
        "PidsLimit",
        "BlkioWeight",
        "Ulimits",
        "CapAdd",
        "CapDrop",
        "ReadonlyRootfs",
        "AutoRemove",
        "RestartPolicy",
        "NetworkMode",
        "PortBindings",
        "Init",
        "SecurityOpt",
        "Privileged",
        "LogConfig",
    }
)
#: Accepted and ignored: terminal size (sent again by resize), Windows-only isolation
#: "default", the empty cgroup namespace mode (Codex-32 always makes one), swappiness -1.
IGNORED_HOST = frozenset(
    {
        "ConsoleSize",
        "Isolation",
        "CgroupnsMode",
        "MemorySwappiness",
        "OomKillDisable",
        "VolumeDriver",
        "Annotations",
        "IpcMode",
        "UTSMode",
        "PidMode",
        "UsernsMode",
    }
)
#: IGNORED_HOST fields' values that mean "the default" (anything else is refused).
_DEFAULT_VALUES: dict[str, tuple[Any, ...]] = {
    "Isolation": ("", "default", None),
    "CgroupnsMode": ("", "private", None),
    "MemorySwappiness": (None, -1),
    "OomKillDisable": (None, False),
    "VolumeDriver": ("", None),
    "Annotations": (None, {}),
    "IpcMode": ("", "private", "shareable", None),
    "UTSMode": ("", None),
    "PidMode": ("", None),
    "UsernsMode": ("", None),
}
#: SecurityOpt entries that Codex-32 does anyway (no_new_privs is set at every level
#: but MINIMAL, where Docker's default also leaves it unset).
_ACCEPTED_SECURITY_OPTS = frozenset(
    {
        "no-new-privileges",
        "no-new-privileges:true",
        "no-new-privileges=true",
        "no-new-privileges:false",
        "no-new-privileges=false",
    }
)


def _is_zero(value: Any) -> bool:
    if isinstance(value, bool):
        return not value
    return value is None or value in ("", 0, [], {})


def _refuse(field: str, why: str = "is not supported by Codex-32") -> DockerAPIError:
    return DockerAPIError(400, f"{field} {why}")


def image_name(image: str) -> str:
    """A Docker image reference as a Codex-32 image name: ``docker.io/library/`` and
    the ``:latest`` tag dropped (templates have no tags)."""
    name = image.strip()
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if name.endswith(":latest"):
        name = name[: -len(":latest")]
    if ":" in name.rsplit("/", 1)[-1] or "@" in name:
        raise DockerAPIError(404, f"No such image: {image}")  # templates have no other tags
    return name


def _strings(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise DockerAPIError(400, f"{field} must be a list of strings")


def _env(value: Any) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in _strings(value, "Env") if not isinstance(value, str) else [value]:
        name, sep, text = item.partition("=")
        if not name:
            raise DockerAPIError(400, f"Env: invalid variable {item!r}")
        if sep:  # a bare NAME is "unset" in Docker: nothing to pass
            env[name] = text
    return env


def _command(body: dict[str, Any]) -> list[str]:
    entrypoint = _strings(body.get("Entrypoint"), "Entrypoint")
    if entrypoint == [""]:
        entrypoint = []
    return entrypoint + _strings(body.get("Cmd"), "Cmd")


def _isolation(labels: dict[str, str], default: IsolationType | None) -> IsolationType | None:
    text = labels.get(ISOLATION_LABEL)
    if text is None:
        return default
    try:
        return IsolationType(text.strip().lower())
    except ValueError:
        raise DockerAPIError(
            400, f"label {ISOLATION_LABEL}={text!r}: use minimal, standard or strict"
        ) from None


def _binds(value: Any) -> list[Volume]:
    volumes = []
    for spec in _strings(value, "HostConfig.Binds"):
        source = spec.split(":", 1)[0]
        if not source.startswith("/"):
            raise _refuse(
                f"HostConfig.Binds {spec!r}: named volumes",
                "are not supported by Codex-32; bind an absolute host path",
            )
        parts = spec.split(":")
        options = set(parts[2].split(",")) if len(parts) == 3 else set()
        unknown = options - {"ro", "rw", "z", "Z", "rprivate", "private"}
        if unknown:
            raise _refuse(f"HostConfig.Binds {spec!r}: option {sorted(unknown)[0]!r}")
        volumes.append(
            Volume(
                source=parts[0],
                target=parts[1] if len(parts) > 1 else parts[0],
                read_only="ro" in options,
            )
        )
    return volumes


def _mounts(value: Any) -> tuple[list[Volume], list[TmpfsMount]]:
    volumes: list[Volume] = []
    tmpfs: list[TmpfsMount] = []
    for mount in value or []:
        kind = mount.get("Type", "")
        target = mount.get("Target", "")
        if kind == "bind":
            volumes.append(
                Volume(
                    source=mount.get("Source", ""),
                    target=target,
                    read_only=bool(mount.get("ReadOnly")),
                )
            )
        elif kind == "tmpfs":
            options = mount.get("TmpfsOptions") or {}
            flags = ("nosuid", "nodev", "ro") if mount.get("ReadOnly") else ("nosuid", "nodev")
            tmpfs.append(
                TmpfsMount(
                    target=target,
                    size_bytes=options.get("SizeBytes") or None,
                    mode=options.get("Mode") or 0o1777,
                    flags=flags,
                )
            )
        else:
            raise _refuse(
                f"HostConfig.Mounts type {kind!r}",
                "is not supported by Codex-32 (use bind or tmpfs)",
            )
    return volumes, tmpfs


def _ports(value: Any) -> list[PortMapping]:
    ports = []
    for key, bindings in (value or {}).items():
        container_port, _, protocol = str(key).partition("/")
        for binding in bindings or [{}]:
            host_port = (binding or {}).get("HostPort") or ""
            if not host_port:
                raise _refuse(
                    f"HostConfig.PortBindings {key}: a random host port",
                    "is not supported by Codex-32; give HostPort",
                )
            host_ip = (binding or {}).get("HostIp") or "0.0.0.0"
            spec = f"{host_ip}:{host_port}:{container_port}/{protocol or 'tcp'}"
            ports.append(PortMapping.parse(spec))
    return ports


def _log_config(value: Any) -> dict[str, Any]:
    config = value or {}
    kind = config.get("Type") or "json-file"
    if kind not in ("json-file", "local"):
        raise _refuse(
            f"HostConfig.LogConfig.Type {kind!r}", "is not supported by Codex-32 (json-file only)"
        )
    options = dict(config.get("Config") or {})
    fields: dict[str, Any] = {}
    if "max-size" in options:
        fields["log_max_size"] = options.pop("max-size")
    if "max-file" in options:
        fields["log_max_files"] = int(options.pop("max-file"))
    if options:
        raise _refuse(f"HostConfig.LogConfig.Config {sorted(options)[0]!r}")
    return fields


def _resources(host: dict[str, Any]) -> ResourceLimits:
    fields: dict[str, Any] = {}
    if host.get("Memory"):
        fields["memory_bytes"] = host["Memory"]
    if host.get("MemorySwap"):
        fields["memory_swap_bytes"] = host["MemorySwap"]
    if host.get("MemoryReservation"):
        fields["memory_reservation_bytes"] = host["MemoryReservation"]
    if host.get("NanoCpus"):
        fields["cpus"] = host["NanoCpus"] / 1e9
    elif host.get("CpuQuota") and host["CpuQuota"] > 0:
        fields["cpus"] = host["CpuQuota"] / (host.get("CpuPeriod") or 100_000)
    if host.get("CpuShares"):
        fields["cpu_shares"] = host["CpuShares"]
    if host.get("CpusetCpus"):
        fields["cpuset_cpus"] = host["CpusetCpus"]
    if host.get("PidsLimit") and host["PidsLimit"] > 0:
        fields["pids_limit"] = host["PidsLimit"]
    if host.get("BlkioWeight"):
        fields["blkio_weight"] = host["BlkioWeight"]
    return ResourceLimits(**fields)


def _security_opts(value: Any) -> None:
    for option in _strings(value, "HostConfig.SecurityOpt"):
        if option not in _ACCEPTED_SECURITY_OPTS:
            raise _refuse(f"HostConfig.SecurityOpt {option!r}")


def _check_unknown(body: dict[str, Any], host: dict[str, Any]) -> None:
    for key, value in body.items():
        if key not in MAPPED_CONFIG | IGNORED_CONFIG and not _is_zero(value):
            raise _refuse(key)
    health = body.get("Healthcheck") or {}
    if health and health.get("Test") not in (None, [], ["NONE"]):
        raise _refuse("Healthcheck", "is not supported by Codex-32")
    # docker-py lists bind targets in Volumes too: only a target nothing binds is an
    # anonymous volume.
    bound = {spec.split(":")[1] for spec in host.get("Binds") or [] if spec.count(":") >= 1}
    bound |= {m.get("Target") for m in host.get("Mounts") or []}
    anonymous = sorted(set(body.get("Volumes") or {}) - bound)
    if anonymous:
        raise _refuse(
            f"Volumes {anonymous[0]!r}: anonymous volumes",
            "are not supported by Codex-32; bind a host path",
        )
    for key, value in host.items():
        if key in MAPPED_HOST:
            continue
        if key in _DEFAULT_VALUES:
            if value not in _DEFAULT_VALUES[key]:
                raise _refuse(f"HostConfig.{key}={value!r}")
            continue
        if key in IGNORED_HOST or _is_zero(value):
            continue
        raise _refuse(f"HostConfig.{key}")
    if host.get("PublishAllPorts"):
        raise _refuse("HostConfig.PublishAllPorts")


def to_config(
    body: dict[str, Any],
    name: str | None,
    *,
    default_isolation: IsolationType | None,
    default_network: str | None,
) -> ContainerConfig:
    """The config a ``POST /containers/create`` body asks for; DockerAPIError (400) for a
    field that cannot be honoured or a value the config refuses."""
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        raise DockerAPIError(400, "HostConfig must be an object")
    _check_unknown(body, host)
    image = body.get("Image")
    if not isinstance(image, str) or not image:
        raise DockerAPIError(400, "config.Image: an image is required")
    labels = {str(k): str(v) for k, v in (body.get("Labels") or {}).items()}
    network_mode = host.get("NetworkMode") or "default"
    network = default_network if network_mode == "default" else network_mode
    if body.get("NetworkDisabled"):
        network = "none"
    restart = host.get("RestartPolicy") or {}
    cap_add = _strings(host.get("CapAdd"), "HostConfig.CapAdd")
    if host.get("Privileged"):
        cap_add = ["ALL"]  # the policy decides (allow_privileged)
    _security_opts(host.get("SecurityOpt"))
    try:
        volumes, tmpfs = _mounts(host.get("Mounts"))
        fields: dict[str, Any] = {
            "name": name.lstrip("/") if name else None,
            "image": image_name(image),
            "command": _command(body),
            "env": _env(body.get("Env")),
            "working_dir": body.get("WorkingDir") or None,
            "user": body.get("User") or None,
            "hostname": body.get("Hostname") or None,
            "labels": labels,
            "tty": bool(body.get("Tty")),
            "volumes": _binds(host.get("Binds")) + volumes,
            "tmpfs": tmpfs
            + [
                TmpfsMount.parse(f"{target}:{options}")
                for target, options in (host.get("Tmpfs") or {}).items()
            ],
            "read_only": bool(host.get("ReadonlyRootfs")),
            "cap_add": cap_add,
            "cap_drop": _strings(host.get("CapDrop"), "HostConfig.CapDrop"),
            "ulimits": [
                Ulimit(name=u["Name"], soft=u["Soft"], hard=u["Hard"])
                for u in host.get("Ulimits") or []
            ],
            "init": bool(host.get("Init")),
            "auto_remove": bool(host.get("AutoRemove")),
            "restart_policy": RestartPolicy(
                name=restart.get("Name") or "no",
                maximum_retry_count=restart.get("MaximumRetryCount") or 0,
            ),
            "resources": _resources(host),
            "network": network,
            "ports": _ports(host.get("PortBindings")),
            **_log_config(host.get("LogConfig")),
        }
        isolation = _isolation(labels, default_isolation)
        if isolation is not None:  # else the config's own default (CODEX32_ISOLATION_LEVEL)
            fields["isolation"] = isolation
        if body.get("StopSignal"):
            fields["stop_signal"] = body["StopSignal"]
        if body.get("StopTimeout") is not None:
            fields["stop_timeout"] = body["StopTimeout"]
        return ContainerConfig(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise DockerAPIError(400, f"invalid {where}: {message}" if where else message) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DockerAPIError(400, f"invalid container config: {exc}") from None
    except ConfigError as exc:
        raise DockerAPIError(400, str(exc)) from None

"""Codex-32's objects in Docker's JSON shapes (inspect, list, images, networks, events,
stats): the fields the clients read, named and typed as Moby sends them."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from codex32 import AsyncContainer, ContainerConfig, ContainerImage, ContainerState

ZERO_TIME = "0001-01-01T00:00:00Z"
_STATUS = {
    ContainerState.CREATED: "created",
    ContainerState.RUNNING: "running",
    ContainerState.PAUSED: "paused",
    ContainerState.RESTARTING: "restarting",
    ContainerState.EXITED: "exited",
    ContainerState.REMOVED: "removing",
}


def timestamp(when: float | None) -> str:
    """RFC 3339 with nanoseconds, UTC, as Moby writes times; the zero time for None."""
    if not when:
        return ZERO_TIME
    moment = datetime.fromtimestamp(when, UTC)
    nanos = round((when - int(when)) * 1e9) % 1_000_000_000
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def image_id(name: str) -> str:
    """A stable ``sha256:`` id for an image name (templates have no content digest)."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def image_reference(name: str) -> str:
    """The name as Docker shows it, with a tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _env_list(env: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in env.items()]


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit[:-1] if count == 1 else unit}"
    return "Less than a second" if seconds < 1 else f"{seconds} seconds"


def status_text(container: AsyncContainer) -> str:
    """``docker ps``'s Status column: "Up 3 seconds", "Exited (0) 2 minutes ago"."""
    record = container.record
    now = time.time()
    if record.status is ContainerState.RUNNING:
        return f"Up {_ago(now - (record.started_at or now))}"
    if record.status is ContainerState.PAUSED:
        return f"Up {_ago(now - (record.started_at or now))} (Paused)"
    if record.status is ContainerState.RESTARTING:
        return f"Restarting ({record.exit_code or 0}) {_ago(now - (record.finished_at or now))} ago"
    if record.status is ContainerState.EXITED:
        return f"Exited ({record.exit_code or 0}) {_ago(now - (record.finished_at or now))} ago"
    return "Created"


def _port_bindings(config: ContainerConfig) -> dict[str, list[dict[str, str]]]:
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in config.ports:
        data = port.model_dump()
        key = f"{data.get('container_port')}/{data.get('protocol', 'tcp')}"
        bindings.setdefault(key, []).append(
            {"HostIp": str(data.get("host_ip", "")), "HostPort": str(data.get("host_port", ""))}
        )
    return bindings


def _mounts(config: ContainerConfig) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {
            "Type": "bind",
            "Source": v.source,
            "Destination": v.target,
            "Mode": "",
            "RW": not v.read_only,
            "Propagation": "rprivate",
        }
        for v in config.volumes
    ]
    mounts += [
        {
            "Type": "tmpfs",
            "Source": "",
            "Destination": t.target,
            "Mode": "",
            "RW": True,
            "Propagation": "",
        }
        for t in config.tmpfs
    ]
    return mounts


def network_mode(config: ContainerConfig) -> str:
    return config.network or "default"


def _networks(settings: dict[str, Any]) -> dict[str, Any]:
    name = str(settings.get("Network") or settings.get("Mode") or "none")
    return {
        name: {
            "NetworkID": hashlib.sha256(name.encode()).hexdigest(),
            "EndpointID": "",
            "Gateway": settings.get("Gateway", ""),
            "IPAddress": settings.get("IPAddress", ""),
            "IPPrefixLen": settings.get("PrefixLen", 0),
            "MacAddress": "",
            "Aliases": None,
        }
    }


def network_settings(settings: dict[str, Any]) -> dict[str, Any]:
    ports: dict[str, Any] = {}
    for text in settings.get("Ports") or []:
        ports.setdefault(str(text), None)
    return {
        "Bridge": settings.get("Bridge", ""),
        "IPAddress": settings.get("IPAddress", ""),
        "IPPrefixLen": settings.get("PrefixLen", 0),
        "Gateway": settings.get("Gateway", ""),
        "MacAddress": "",
        "Ports": ports,
        "Networks": _networks(settings),
        "SandboxID": "",
        "SandboxKey": "",
    }


def inspect(
    container: AsyncContainer, config: ContainerConfig, settings: dict[str, Any]
) -> dict[str, Any]:
    """``GET /containers/{id}/json``."""
    record = container.record
    status = _STATUS.get(record.status, "dead")
    command = list(config.command)
    resources = config.resources
    return {
        "Id": record.id,
        "Created": timestamp(record.created_at),
        "Path": command[0] if command else "",
        "Args": command[1:],
        "State": {
            "Status": status,
            "Running": record.status in (ContainerState.RUNNING, ContainerState.PAUSED),
            "Paused": record.status is ContainerState.PAUSED,
            "Restarting": record.status is ContainerState.RESTARTING,
            "OOMKilled": record.oom_killed,
            "Dead": False,
            "Pid": record.pid or 0 if record.status is ContainerState.RUNNING else 0,
            "ExitCode": record.exit_code or 0,
            "Error": record.error or "",
            "StartedAt": timestamp(record.started_at),
            "FinishedAt": timestamp(record.finished_at),
        },
        "Image": image_id(config.image),
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": "",
        "Name": "/" + record.name,
        "RestartCount": record.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": {
            "Binds": [
                f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in config.volumes
            ]
            or None,
            "LogConfig": {"Type": "json-file", "Config": _log_options(config)},
            "NetworkMode": network_mode(config),
            "PortBindings": _port_bindings(config),
            "RestartPolicy": {
                "Name": config.restart_policy.name,
                "MaximumRetryCount": config.restart_policy.maximum_retry_count,
            },
            "AutoRemove": config.auto_remove,
            "CapAdd": [c for c in config.cap_add if c != "ALL"] or None,
            "CapDrop": config.cap_drop or None,
            "Privileged": "ALL" in config.cap_add,
            "ReadonlyRootfs": config.read_only,
            "Tmpfs": {t.target: "" for t in config.tmpfs} or None,
            "Init": config.init,
            "Memory": resources.memory_bytes or 0,
            "MemorySwap": resources.memory_swap_bytes or 0,
            "MemoryReservation": resources.memory_reservation_bytes or 0,
            "NanoCpus": int((resources.cpus or 0) * 1e9),
            "CpuShares": resources.cpu_shares or 0,
            "CpusetCpus": resources.cpuset_cpus or "",
            "PidsLimit": resources.pids_limit,
            "BlkioWeight": resources.blkio_weight or 0,
            "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in config.ulimits]
            or None,
            "Isolation": "",
        },
        "GraphDriver": {"Name": "overlay2", "Data": None},
        "Mounts": _mounts(config),
        "Config": {
            "Hostname": config.hostname or record.id[:12],
            "Domainname": "",
            "User": config.user or "",
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": config.tty,
            "OpenStdin": False,
            "StdinOnce": False,
            "Env": _env_list(config.env),
            "Cmd": command or None,
            "Image": image_reference(config.image),
            "Volumes": None,
            "WorkingDir": config.working_dir or "",
            "Entrypoint": None,
            "OnBuild": None,
            "Labels": dict(config.labels),
            "StopSignal": config.stop_signal,
            "StopTimeout": config.stop_timeout,
        },
        "NetworkSettings": network_settings(settings),
        "Codex32": {"Isolation": config.isolation.value, "Warnings": list(record.warnings)},
    }


def _log_options(config: ContainerConfig) -> dict[str, str]:
    options = {}
    if config.log_max_size:
        options["max-size"] = str(config.log_max_size)
    if config.log_max_files > 1:
        options["max-file"] = str(config.log_max_files)
    return options


def list_entry(container: AsyncContainer, config: ContainerConfig) -> dict[str, Any]:
    """One row of ``GET /containers/json``."""
    record = container.record
    return {
        "Id": record.id,
        "Names": ["/" + record.name],
        "Image": image_reference(config.image),
        "ImageID": image_id(config.image),
        "Command": shlex.join(config.command),
        "Created": int(record.created_at),
        "Ports": [],
        "Labels": dict(config.labels),
        "State": _STATUS.get(record.status, "dead"),
        "Status": status_text(container),
        "HostConfig": {"NetworkMode": network_mode(config)},
        "NetworkSettings": {"Networks": {}},
        "Mounts": _mounts(config),
    }


def image_summary(image: ContainerImage) -> dict[str, Any]:
    """One row of ``GET /images/json``."""
    created = _mtime(image.path) if image.built else 0
    return {
        "Id": image_id(image.name),
        "ParentId": "",
        "RepoTags": [image_reference(image.name)],
        "RepoDigests": [],
        "Created": created,
        "Size": 0,
        "SharedSize": -1,
        "VirtualSize": 0,
        "Labels": {"codex32.description": image.description},
        "Containers": -1,
    }


def image_inspect(image: ContainerImage) -> dict[str, Any]:
    """``GET /images/{name}/json``."""
    created = _mtime(image.path) if image.built else 0
    return {
        "Id": image_id(image.name),
        "RepoTags": [image_reference(image.name)],
        "RepoDigests": [],
        "Parent": "",
        "Comment": image.description,
        "Created": timestamp(created),
        "Author": "",
        "Architecture": "amd64",
        "Os": "linux",
        "Size": 0,
        "VirtualSize": 0,
        "Config": {
            "Cmd": list(image.command) or None,
            "Env": None,
            "Entrypoint": None,
            "Labels": {"codex32.description": image.description},
            "WorkingDir": "",
        },
        "RootFS": {"Type": "layers", "Layers": []},
        "Metadata": {"LastTagTime": ZERO_TIME},
    }


def _mtime(path: str) -> int:
    try:
        return int(os.stat(path).st_mtime)
    except OSError:
        return 0


def network(definition: Any, containers: dict[str, Any] | None = None) -> dict[str, Any]:
    """``GET /networks/{id}`` for a network definition (and the built-in host and none)."""
    name = str(definition.name) if not isinstance(definition, str) else definition
    subnet = getattr(definition, "subnet", None)
    gateway = getattr(definition, "gateway", None)
    driver = {"host": "host", "none": "null"}.get(name, "bridge")
    return {
        "Name": name,
        "Id": hashlib.sha256(name.encode()).hexdigest(),
        "Created": ZERO_TIME,
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": False,
        "IPAM": {
            "Driver": "default",
            "Options": None,
            "Config": [{"Subnet": subnet, "Gateway": gateway}] if subnet else [],
        },
        "Internal": False,
        "Attachable": False,
        "Ingress": False,
        "Containers": containers or {},
        "Options": {"com.docker.network.bridge.name": getattr(definition, "bridge", "")}
        if subnet
        else {},
        "Labels": {},
    }


def event(item: Any) -> dict[str, Any]:
    """One engine event as Docker's (both the old and the current field names)."""
    attributes = {"name": item.name, **{k: str(v) for k, v in item.attributes.items()}}
    action = item.action
    if action in ("exec_start", "exec_create") and "execID" in item.attributes:
        action = f"{action}: {item.attributes['execID']}"
    nanos = int(item.time * 1e9)
    return {
        "status": action,
        "id": item.id,
        "from": attributes.get("image", ""),
        "Type": item.type or "container",
        "Action": action,
        "Actor": {"ID": item.id, "Attributes": attributes},
        "scope": "local",
        "time": nanos // 1_000_000_000,
        "timeNano": nanos,
    }


def _system_cpu_ns() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(v) for v in fields[:8]) * 1_000_000_000 // ticks


def stats(
    container: AsyncContainer, sample: Any, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """``GET /containers/{id}/stats``: one sample, with the previous one as ``precpu``."""
    cpu = {
        "cpu_usage": {
            "total_usage": sample.cpu_usage_ns,
            "usage_in_kernelmode": 0,
            "usage_in_usermode": 0,
            "percpu_usage": None,
        },
        "system_cpu_usage": _system_cpu_ns(),
        "online_cpus": os.cpu_count() or 1,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    empty_cpu = {"cpu_usage": {"total_usage": 0}, "throttling_data": {}}
    return {
        "read": timestamp(sample.time),
        "preread": previous["read"] if previous else ZERO_TIME,
        "name": "/" + container.name,
        "id": container.id,
        "num_procs": 0,
        "pids_stats": {
            "current": sample.pids,
            **({"limit": sample.pids_limit} if sample.pids_limit else {}),
        },
        "cpu_stats": cpu,
        "precpu_stats": previous["cpu_stats"] if previous else empty_cpu,
        "memory_stats": {
            "usage": sample.memory_usage_bytes,
            "max_usage": sample.memory_peak_bytes or 0,
            "limit": sample.memory_limit_bytes or _host_memory(),
            "failcnt": sample.oom_kills,
            "stats": {},
        },
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 0, "minor": 0, "op": "read", "value": sample.block_read_bytes},
                {"major": 0, "minor": 0, "op": "write", "value": sample.block_write_bytes},
            ],
        },
        "networks": {
            "eth0": {
                "rx_bytes": sample.net_rx_bytes,
                "tx_bytes": sample.net_tx_bytes,
                "rx_packets": 0,
                "tx_packets": 0,
                "rx_errors": 0,
                "tx_errors": 0,
                "rx_dropped": 0,
                "tx_dropped": 0,
            }
        },
    }


def _host_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def inspect_status(state: ContainerState) -> str:
    """Docker's name for a state (``State.Status``, the ``status`` filter)."""
    return _STATUS.get(state, "dead")


def json_bytes(body: Any) -> bytes:
    return json.dumps(body).encode() + b"\n"


def zero_stats(when: float) -> Any:
    """What a container that does not run has used: nothing (Moby answers zeros)."""
    return SimpleNamespace(
        time=when,
        cpu_usage_ns=0,
        memory_usage_bytes=0,
        memory_limit_bytes=None,
        memory_peak_bytes=None,
        pids=0,
        pids_limit=None,
        block_read_bytes=0,
        block_write_bytes=0,
        net_rx_bytes=0,
        net_tx_bytes=0,
        oom_kills=0,
    )

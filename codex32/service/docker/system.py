"""System, event, image and network endpoints."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import platform
import time
from typing import Any

from aiohttp import web

from codex32 import ContainerState

from . import views
from .backend import backend_of, docker_error
from .mapping import image_name
from .wire import (
    API_VERSION,
    ENGINE_VERSION,
    MIN_API_VERSION,
    DockerAPIError,
    JsonLines,
    json_response,
    no_content,
    query_filters,
    read_json_body,
)

_PING_HEADERS = {
    "Api-Version": API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    "Builder-Version": "1",
    "Swarm": "inactive",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


async def ping(request: web.Request) -> web.StreamResponse:
    """``HEAD``/``GET /_ping``: the CLI reads ``Api-Version`` here (absent means 1.24)."""
    body = "" if request.method == "HEAD" else "OK"
    return web.Response(text=body, content_type="text/plain", headers=_PING_HEADERS)


def _kernel() -> str:
    return platform.release()


async def version(request: web.Request) -> web.StreamResponse:
    details = {
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "codex32",
        "GoVersion": f"python{platform.python_version()}",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": _kernel(),
        "Experimental": "false",
        "BuildTime": views.ZERO_TIME,
    }
    return json_response(
        {
            "Platform": {"Name": "Codex-32"},
            "Components": [{"Name": "Engine", "Version": ENGINE_VERSION, "Details": details}],
            "Version": ENGINE_VERSION,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "codex32",
            "GoVersion": f"python{platform.python_version()}",
            "Os": "linux",
            "Arch": "amd64",
            "KernelVersion": _kernel(),
            "BuildTime": views.ZERO_TIME,
        }
    )


async def info(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    containers = await backend.engine.containers.list(all=True)
    states = [c.state for c in containers]
    images = await backend.engine.images.list()
    storage = str(backend.engine.settings.storage_dir)
    return json_response(
        {
            "ID": "codex32",
            "Containers": len(states),
            "ContainersRunning": states.count(ContainerState.RUNNING),
            "ContainersPaused": states.count(ContainerState.PAUSED),
            "ContainersStopped": len(states)
            - states.count(ContainerState.RUNNING)
            - states.count(ContainerState.PAUSED),
            "Images": len(images),
            "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "overlay"]],
            "Plugins": {"Volume": [], "Network": ["bridge", "host", "null"], "Log": ["json-file"]},
            "MemoryLimit": True,
            "SwapLimit": True,
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "OomKillDisable": False,
            "IPv4Forwarding": True,
            "Debug": False,
            "NFd": len(os.listdir("/proc/self/fd")),
            "NGoroutines": 0,
            "SystemTime": views.timestamp(time.time()),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1",
            "NEventsListener": 0,
            "KernelVersion": _kernel(),
            "OperatingSystem": "Codex-32",
            "OSType": "linux",
            "OSVersion": "",
            "Architecture": platform.machine(),
            "NCPU": os.cpu_count() or 1,
            "MemTotal": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "DockerRootDir": storage,
            "Name": platform.node(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": ENGINE_VERSION,
            "Runtimes": {"codex32": {"path": "codex32"}},
            "DefaultRuntime": "codex32",
            "Swarm": {
                "LocalNodeState": "inactive",
                "NodeID": "",
                "NodeAddr": "",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "tini",
            "SecurityOptions": ["name=seccomp,profile=builtin", "name=no-new-privileges"],
            "Warnings": [],
        }
    )


def _time_param(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise DockerAPIError(400, f"invalid value for {name}: {text!r}") from None


_EVENT_FILTERS = frozenset({"container", "event", "type"})


async def events(request: web.Request) -> web.StreamResponse:
    """Past events from ``since``, then (without ``until``) new ones as they come."""
    backend = backend_of(request)
    filters = query_filters(request)
    unknown = sorted(set(filters) - _EVENT_FILTERS)
    if unknown:
        raise DockerAPIError(400, f"invalid filter '{unknown[0]}'")
    since = _time_param(request, "since")
    until = _time_param(request, "until")
    lines = JsonLines(request)
    if until is not None:
        try:
            past = await backend.engine.event_list(since=since, until=until, filters=filters)
        except ValueError as exc:
            raise DockerAPIError(400, str(exc)) from None
        await lines.start()
        for item in past:
            await lines.send(views.event(item))
        return await lines.finish()
    await lines.start()
    stream = backend.engine.events(since=since, filters=filters)
    try:
        async for item in stream:
            await lines.send(views.event(item))
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
    return lines.response


# -- images ------------------------------------------------------------------------


async def images(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    return json_response([views.image_summary(i) for i in await backend.engine.images.list()])


async def _image(request: web.Request, reference: str) -> Any:
    backend = backend_of(request)
    try:
        return await backend.engine.images.get(image_name(reference))
    except Exception as exc:
        raise docker_error(exc, image=reference) from None


async def image_inspect(request: web.Request) -> web.StreamResponse:
    reference = request.match_info["name"]
    backend = backend_of(request)
    for image in await backend.engine.images.list():
        if reference in (views.image_id(image.name), views.image_id(image.name)[7:]):
            return json_response(views.image_inspect(image))
    return json_response(views.image_inspect(await _image(request, reference)))


async def image_pull(request: web.Request) -> web.StreamResponse:
    """Codex-32 has no registry client: an image it knows is "pulled", others are not."""
    reference = request.query.get("fromImage", "")
    tag = request.query.get("tag", "")
    full = f"{reference}:{tag}" if tag and ":" not in reference.rsplit("/", 1)[-1] else reference
    image = await _image(request, full.removeprefix("docker.io/library/"))
    lines = JsonLines(request)
    await lines.start()
    await lines.send({"status": f"Status: Image is up to date for {image.name}"})
    return await lines.finish()


# -- networks ----------------------------------------------------------------------

_BUILTIN = ("host", "none")


async def networks(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    filters = query_filters(request)
    rows = [views.network(name) for name in _BUILTIN]
    rows += [views.network(n) for n in await backend.engine.networks.list()]
    names = filters.get("name")
    if names:
        rows = [r for r in rows if any(n in r["Name"] for n in names)]
    ids = filters.get("id")
    if ids:
        rows = [r for r in rows if any(r["Id"].startswith(i) for i in ids)]
    return json_response(rows)


async def _network(request: web.Request, wanted: str) -> Any:
    backend = backend_of(request)
    if wanted in _BUILTIN:
        return wanted
    for definition in await backend.engine.networks.list():
        if wanted == definition.name or views.network(definition)["Id"].startswith(wanted):
            return definition
    raise DockerAPIError(404, f"network {wanted} not found")


async def network_inspect(request: web.Request) -> web.StreamResponse:
    return json_response(views.network(await _network(request, request.match_info["id"])))


def _free_subnet(taken: list[str]) -> str:
    """The first 10.89.N.0/24 that overlaps no network's subnet (Docker picks for you)."""
    used = [ipaddress.IPv4Network(t) for t in taken]
    for third in range(1, 255):
        candidate = ipaddress.IPv4Network(f"10.89.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise DockerAPIError(500, "no free subnet left in 10.89.0.0/16: give IPAM.Config[0].Subnet")


async def network_create(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    body = await read_json_body(request)
    name = body.get("Name")
    if not isinstance(name, str) or not name:
        raise DockerAPIError(400, "network name is required")
    driver = body.get("Driver") or "bridge"
    if driver != "bridge":
        raise DockerAPIError(400, f"Driver {driver!r} is not supported by Codex-32 (bridge only)")
    for field in ("Internal", "EnableIPv6", "Attachable", "Ingress", "ConfigOnly"):
        if body.get(field):
            raise DockerAPIError(400, f"{field} is not supported by Codex-32")
    ipam = (body.get("IPAM") or {}).get("Config") or []
    existing = await backend.engine.networks.list()
    if any(n.name == name for n in existing) or name in _BUILTIN:
        raise DockerAPIError(409, f"network with name {name} already exists")
    subnet = ipam[0].get("Subnet") if ipam else None
    gateway = ipam[0].get("Gateway") if ipam else None
    subnet = subnet or _free_subnet([n.subnet for n in existing])
    options = body.get("Options") or {}
    masquerade = str(options.get("com.docker.network.bridge.enable_ip_masquerade", "")) == "true"
    try:
        definition = await backend.engine.networks.create(
            name, subnet, gateway=gateway, masquerade=masquerade
        )
    except Exception as exc:
        raise docker_error(exc) from None
    return json_response({"Id": views.network(definition)["Id"], "Warning": ""}, status=201)


async def network_remove(request: web.Request) -> web.StreamResponse:
    backend = backend_of(request)
    target = await _network(request, request.match_info["id"])
    if isinstance(target, str):
        raise DockerAPIError(403, f"{target} is a pre-defined network and cannot be removed")
    try:
        await backend.engine.networks.remove(target.name)
    except Exception as exc:
        raise docker_error(exc) from None
    return no_content()

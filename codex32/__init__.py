"""Codex-32: a container engine for Linux, for running bots.

The public API. Names are loaded on first use, so that ``python -m codex32._runtime.init``
(every container's set-up process) and the CLI do not pay for pydantic and the
engine when they do not need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cgroups.containers import ContainerStats as ContainerStats
    from ._engine.async_engine import AsyncContainer as AsyncContainer
    from ._engine.async_engine import AsyncContainerEngine as AsyncContainerEngine
    from ._engine.container import Container as Container
    from ._engine.engine import ContainerEngine as ContainerEngine
    from ._engine.engine import get_engine as get_engine
    from ._engine.engine import init_engine as init_engine
    from ._engine.engine import shutdown_engine as shutdown_engine
    from ._engine.results import ExecResult as ExecResult
    from ._engine.results import RunResult as RunResult
    from ._network.ipam import NetworkDefinition as NetworkDefinition
    from ._runtime.launch import prestart_fork_server as prestart_fork_server
    from ._store.events import Event as Event
    from ._store.events import parse_event_filters as parse_event_filters
    from ._store.logs import LogEntry as LogEntry
    from ._store.logs import parse_since as parse_since
    from ._store.state import ContainerRecord as ContainerRecord
    from ._store.state import ContainerState as ContainerState
    from .config.container import ContainerConfig as ContainerConfig
    from .config.container import DeviceMapping as DeviceMapping
    from .config.container import DeviceRate as DeviceRate
    from .config.container import IsolationType as IsolationType
    from .config.container import PortMapping as PortMapping
    from .config.container import ResourceLimits as ResourceLimits
    from .config.container import RestartPolicy as RestartPolicy
    from .config.container import TmpfsMount as TmpfsMount
    from .config.container import Ulimit as Ulimit
    from .config.container import Volume as Volume
    from .config.images import ContainerImage as ContainerImage
    from .errors import Codex32Error as Codex32Error
    from .errors import ConfigError as ConfigError
    from .errors import ContainerError as ContainerError
    from .errors import ContainerNotFoundError as ContainerNotFoundError
    from .errors import DamagedRecordError as DamagedRecordError
    from .errors import ImageError as ImageError
    from .errors import ImageNotFoundError as ImageNotFoundError
    from .errors import LaunchError as LaunchError
    from .errors import NetworkError as NetworkError
    from .errors import StateError as StateError

_EXPORTS = {
    "ContainerStats": "._cgroups.containers",
    "ExecResult": "._engine.results",
    "NetworkDefinition": "._network.ipam",
    "prestart_fork_server": "._runtime.launch",
    "Event": "._store.events",
    "parse_event_filters": "._store.events",
    "LogEntry": "._store.logs",
    "parse_since": "._store.logs",
    "ContainerRecord": "._store.state",
    "AsyncContainer": "._engine.async_engine",
    "AsyncContainerEngine": "._engine.async_engine",
    "Container": "._engine.container",
    "ContainerEngine": "._engine.engine",
    "RunResult": "._engine.results",
    "get_engine": "._engine.engine",
    "init_engine": "._engine.engine",
    "shutdown_engine": "._engine.engine",
    "ContainerState": "._store.state",
    "ContainerConfig": ".config.container",
    "ContainerImage": ".config.images",
    "DeviceMapping": ".config.container",
    "DeviceRate": ".config.container",
    "IsolationType": ".config.container",
    "PortMapping": ".config.container",
    "ResourceLimits": ".config.container",
    "RestartPolicy": ".config.container",
    "TmpfsMount": ".config.container",
    "Ulimit": ".config.container",
    "Volume": ".config.container",
    "Codex32Error": ".errors",
    "ConfigError": ".errors",
    "ContainerError": ".errors",
    "ContainerNotFoundError": ".errors",
    "DamagedRecordError": ".errors",
    "ImageError": ".errors",
    "ImageNotFoundError": ".errors",
    "LaunchError": ".errors",
    "NetworkError": ".errors",
    "StateError": ".errors",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'codex32' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

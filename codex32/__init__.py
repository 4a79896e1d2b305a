"""Codex-32: a container engine for Linux, for running bots.

The public API. Names are loaded on first use, so that ``python -m codex32._init``
(every container's set-up process) and the CLI do not pay for pydantic and the
engine when they do not need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._async import AsyncContainer as AsyncContainer
    from ._async import AsyncContainerEngine as AsyncContainerEngine
    from ._engine import Container as Container
    from ._engine import ContainerEngine as ContainerEngine
    from ._engine import RunResult as RunResult
    from ._engine import get_engine as get_engine
    from ._engine import init_engine as init_engine
    from ._engine import shutdown_engine as shutdown_engine
    from ._state import ContainerState as ContainerState
    from .config import ContainerConfig as ContainerConfig
    from .config import ContainerImage as ContainerImage
    from .config import DeviceRate as DeviceRate
    from .config import IsolationType as IsolationType
    from .config import PortMapping as PortMapping
    from .config import ResourceLimits as ResourceLimits
    from .config import RestartPolicy as RestartPolicy
    from .config import TmpfsMount as TmpfsMount
    from .config import Ulimit as Ulimit
    from .config import Volume as Volume
    from .errors import Codex32Error as Codex32Error
    from .errors import ConfigError as ConfigError
    from .errors import ContainerError as ContainerError
    from .errors import ContainerNotFoundError as ContainerNotFoundError
    from .errors import ImageError as ImageError
    from .errors import LaunchError as LaunchError
    from .errors import NetworkError as NetworkError
    from .errors import StateError as StateError

_EXPORTS = {
    "AsyncContainer": "._async",
    "AsyncContainerEngine": "._async",
    "Container": "._engine",
    "ContainerEngine": "._engine",
    "RunResult": "._engine",
    "get_engine": "._engine",
    "init_engine": "._engine",
    "shutdown_engine": "._engine",
    "ContainerState": "._state",
    "ContainerConfig": ".config",
    "ContainerImage": ".config",
    "DeviceRate": ".config",
    "IsolationType": ".config",
    "PortMapping": ".config",
    "ResourceLimits": ".config",
    "RestartPolicy": ".config",
    "TmpfsMount": ".config",
    "Ulimit": ".config",
    "Volume": ".config",
    "Codex32Error": ".errors",
    "ConfigError": ".errors",
    "ContainerError": ".errors",
    "ContainerNotFoundError": ".errors",
    "ImageError": ".errors",
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

"""The models of what a user asks for: pydantic, no OS calls (layer L0).

``container`` (ContainerConfig and its parts), ``network`` (modes, ports, rates),
``capabilities`` (names and numbers, standard library only: the set-up process reads
it), ``images`` (what the engine shows of an image). Names load lazily, so that
importing ``capabilities`` does not import pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codex32.config.container import ContainerConfig as ContainerConfig
    from codex32.config.container import DeviceRate as DeviceRate
    from codex32.config.container import IsolationType as IsolationType
    from codex32.config.container import ResourceLimits as ResourceLimits
    from codex32.config.container import RestartPolicy as RestartPolicy
    from codex32.config.container import TmpfsMount as TmpfsMount
    from codex32.config.container import Ulimit as Ulimit
    from codex32.config.container import Volume as Volume
    from codex32.config.container import parse_size as parse_size
    from codex32.config.images import ContainerImage as ContainerImage
    from codex32.config.network import PortMapping as PortMapping

_EXPORTS = {
    "ContainerConfig": ".container",
    "DeviceRate": ".container",
    "IsolationType": ".container",
    "ResourceLimits": ".container",
    "RestartPolicy": ".container",
    "TmpfsMount": ".container",
    "Ulimit": ".container",
    "Volume": ".container",
    "parse_size": ".container",
    "ContainerImage": ".images",
    "PortMapping": ".network",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'codex32.config.container' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

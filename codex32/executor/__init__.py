"""The bot executor: bots as processes, containers or Kubernetes pods (see docs/executor.md).

Built on the public API of ``codex32`` only. Names load lazily, so that the CLI pays
for SQLAlchemy and the Kubernetes client only in the commands that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codex32.executor.executor import AdaptiveExecutor as AdaptiveExecutor
    from codex32.executor.executor import BotEvent as BotEvent
    from codex32.executor.executor import BotNotFoundError as BotNotFoundError
    from codex32.executor.models import Bot as Bot
    from codex32.executor.models import BotRun as BotRun
    from codex32.executor.models import BotStatus as BotStatus
    from codex32.executor.models import DeploymentConfig as DeploymentConfig
    from codex32.executor.models import DeploymentType as DeploymentType
    from codex32.executor.models import ExecProbe as ExecProbe
    from codex32.executor.models import HealthCheck as HealthCheck
    from codex32.executor.models import HealthState as HealthState
    from codex32.executor.models import HttpProbe as HttpProbe
    from codex32.executor.models import RunState as RunState
    from codex32.executor.models import TcpProbe as TcpProbe
    from codex32.executor.sync import SyncAdaptiveExecutor as SyncAdaptiveExecutor

_EXPORTS = {
    "AdaptiveExecutor": ".executor",
    "BotEvent": ".executor",
    "BotNotFoundError": ".executor",
    "SyncAdaptiveExecutor": ".sync",
    "Bot": ".models",
    "BotRun": ".models",
    "BotStatus": ".models",
    "DeploymentConfig": ".models",
    "DeploymentType": ".models",
    "ExecProbe": ".models",
    "HealthCheck": ".models",
    "HealthState": ".models",
    "HttpProbe": ".models",
    "RunState": ".models",
    "TcpProbe": ".models",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'codex32.executor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

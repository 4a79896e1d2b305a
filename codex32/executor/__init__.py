"""The bot executor: bots as processes, containers or Kubernetes pods (see docs/executor.md).

Built on the public API of ``codex32`` only. Names load lazily, so that the CLI pays
for SQLAlchemy and the Kubernetes client only in the commands that use them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .executor import AdaptiveExecutor as AdaptiveExecutor
    from .executor import BotEvent as BotEvent
    from .executor import BotNotFoundError as BotNotFoundError
    from .models import Bot as Bot
    from .models import BotRun as BotRun
    from .models import BotStatus as BotStatus
    from .models import DeploymentConfig as DeploymentConfig
    from .models import DeploymentType as DeploymentType
    from .models import ExecProbe as ExecProbe
    from .models import HealthCheck as HealthCheck
    from .models import HealthState as HealthState
    from .models import HttpProbe as HttpProbe
    from .models import RunState as RunState
    from .models import TcpProbe as TcpProbe
    from .sync import SyncAdaptiveExecutor as SyncAdaptiveExecutor

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

"""What a running container is doing: stats from its cgroup, top from /proc."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from codex32._cgroups.containers import ContainerStats, exited_stats
from codex32._engine import records
from codex32._store.state import ContainerState
from codex32.config.network import HOST, resolve_network
from codex32.errors import CgroupError, StateError

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine


def stats(engine: ContainerEngine, container: Container) -> ContainerStats:
    record = records.refresh(engine, container.id)
    live = record.status in (ContainerState.RUNNING, ContainerState.PAUSED)
    config = container.config
    # A host-network container has no traffic of its own to count (Docker shows none).
    own_network = resolve_network(config.network, config.isolation.value) != HOST
    if live:
        return engine._cgroups.stats(container.id, record.pid, network=own_network)
    # The monitor records the last figures at the exit, then removes the cgroup (it may
    # be going while we look). Without figures (a monitor that died) what the cgroup
    # still says, if it is there.
    if record.cpu_usage_ns is None and engine._cgroups.handle(container.id) is not None:
        with contextlib.suppress(CgroupError):
            return engine._cgroups.stats(container.id, None, network=own_network)
    return exited_stats(
        config.resources, record.cpu_usage_ns, record.memory_peak_bytes, record.oom_kills
    )


def top(engine: ContainerEngine, container: Container) -> list[dict[str, object]]:
    import psutil

    record = records.refresh(engine, container.id)
    if record.status not in (ContainerState.RUNNING, ContainerState.PAUSED):
        raise StateError(f"the container is {record.status.value}", container=container.name)
    cgroup = engine._cgroups.handle(container.id)
    pids = cgroup.pids() if cgroup is not None else [record.pid or 0]
    rows: list[dict[str, object]] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            with proc.oneshot():
                rows.append(
                    {
                        "pid": pid,
                        "ppid": proc.ppid(),
                        "user": proc.username(),
                        "cpu_percent": proc.cpu_percent(),
                        "rss_bytes": proc.memory_info().rss,
                        "started": proc.create_time(),
                        "command": " ".join(proc.cmdline()) or proc.name(),
                    }
                )
    return rows

"""Pick the cgroup driver by what the host mounts, and describe it for ``codex32 doctor``.

Layouts, read from the mount table (not guessed from paths):

* **v2**: cgroup2 only (``/sys/fs/cgroup`` is cgroup2) -> v2 driver.
* **v1**: v1 controller hierarchies only -> v1 driver.
* **hybrid**: v1 controllers *and* a cgroup2 tree (systemd's ``unified``). The v1
  controllers win when they include any the engine manages (cpu, memory, pids, ...):
  the v2 tree of such hosts carries none or almost none (only hugetlb on the
  development hosts), and a controller is active in one version only. A v2 host that
  also mounts a stray v1 hierarchy the engine has no use for (``net_cls``,
  ``perf_event``) gets the v2 driver.
* **none**: nothing mounted -> no driver (the engine falls back to rlimits and says so).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from codex32._cgroups._fs import (
    MOUNTINFO,
    PROC_CGROUP,
    CgroupFS,
    cgroup_mounts,
    host_path,
    own_cgroups,
)
from codex32._cgroups.driver import CgroupDriver
from codex32._cgroups.v1 import MANAGED, V1Driver
from codex32._cgroups.v2 import V2Driver
from codex32.errors import CgroupError

Layout = Literal["v1", "v2", "hybrid", "none"]


@dataclass(frozen=True)
class CgroupHostInfo:
    """What the host offers, for ``codex32 doctor`` and for picking the driver."""

    layout: Layout
    driver: Literal["v1", "v2"] | None
    v1_controllers: tuple[str, ...]  # mounted as v1 hierarchies
    v2_controllers: tuple[str, ...]  # available in our cgroup of the unified tree
    unified_mountpoint: str | None

    def describe(self) -> str:
        """One line per fact, for humans."""
        lines = [
            f"cgroup layout: {self.layout}",
            f"cgroup driver: {self.driver or 'none (limits fall back to rlimits)'}",
            f"v1 controllers: {', '.join(self.v1_controllers) or '-'}",
            f"v2 controllers: {', '.join(self.v2_controllers) or '-'}"
            + (f" ({self.unified_mountpoint})" if self.unified_mountpoint else ""),
        ]
        return "\n".join(lines)


def host_info(mountinfo: str = MOUNTINFO, proc_cgroup: str = PROC_CGROUP) -> CgroupHostInfo:
    """Read the mount table and our own cgroups; never writes anything."""
    mounts = cgroup_mounts(mountinfo)
    v1 = sorted({c for m in mounts if m.fstype == "cgroup" for c in m.controllers})
    unified = next((m for m in mounts if m.fstype == "cgroup2"), None)
    v2: list[str] = []
    if unified is not None:
        own = own_cgroups(proc_cgroup).get("", "/")
        try:
            directory = host_path(unified, own)
        except CgroupError:
            directory = unified.mountpoint
        path = os.path.join(directory, "cgroup.controllers")
        if os.path.exists(path):
            v2 = sorted(CgroupFS().read(path, "detect").split())
    layout: Layout
    driver: Literal["v1", "v2"] | None
    if v1:
        layout = "hybrid" if unified is not None else "v1"
    else:
        layout = "v2" if unified is not None else "none"
    if set(v1) & set(MANAGED):
        driver = "v1"
    elif unified is not None:
        driver = "v2"
    else:
        driver = None
    return CgroupHostInfo(
        layout=layout,
        driver=driver,
        v1_controllers=tuple(v1),
        v2_controllers=tuple(v2),
        unified_mountpoint=unified.mountpoint if unified is not None else None,
    )


def detect_driver(
    parent: str = "codex32",
    *,
    mountinfo: str = MOUNTINFO,
    proc_cgroup: str = PROC_CGROUP,
    fs: CgroupFS | None = None,
    timeout: float = 5.0,
) -> CgroupDriver:
    """The driver for this host, placing container cgroups under *parent*."""
    info = host_info(mountinfo, proc_cgroup)
    if info.driver == "v1":
        return V1Driver(
            parent, mountinfo=mountinfo, proc_cgroup=proc_cgroup, fs=fs, timeout=timeout
        )
    if info.driver == "v2":
        return V2Driver(
            parent, mountinfo=mountinfo, proc_cgroup=proc_cgroup, fs=fs, timeout=timeout
        )
    raise CgroupError(
        "no cgroup hierarchy is mounted",
        step="detect",
        path=mountinfo,
        hint="mount cgroup2 on /sys/fs/cgroup (or the v1 controllers) to enforce limits",
    )

"""Isolation level + config -> the settings a container gets (one pure function).

The table (docs/isolation.md has the why):

========  ==================================  ===========================  =======================
level     namespaces                          root filesystem              privileges
========  ==================================  ===========================  =======================
MINIMAL   pid, mount                          overlay on the template      host root minus the
                                                                           capabilities that reach
                                                                           the whole machine
STANDARD  + uts, ipc, net, cgroup             overlay, pivot_root, masked  Docker's default caps,
                                              and read-only /proc paths    no_new_privs, seccomp
STRICT    + user, time                        read-only root, tmpfs /tmp   no capabilities, root
                                                                           mapped to an unprivileged
                                                                           host uid, seccomp,
                                                                           loopback-only network
========  ==================================  ===========================  =======================
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from codex32.config.capabilities import (
    ALL_CAPABILITIES,
    DOCKER_DEFAULT_CAPABILITIES,
    HOST_DANGEROUS_CAPABILITIES,
)
from codex32.config.container import ContainerConfig, IsolationType
from codex32.config.network import HOST, resolve_network

# Docker's masked and read-only paths (moby oci/defaults.go).
MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


@dataclass(frozen=True)
class IdMapping:
    """One line of /proc/PID/uid_map: ``container_id host_id size``."""

    container_id: int
    host_id: int
    size: int


@dataclass(frozen=True)
class Profile:
    """What the isolation level and the config's overrides add up to."""

    isolation: IsolationType
    namespaces: tuple[str, ...]
    capabilities: frozenset[str]
    no_new_privs: bool
    seccomp: bool
    masked_paths: tuple[str, ...]
    readonly_paths: tuple[str, ...]
    read_only_root: bool
    tmpfs_tmp: bool
    network: str
    uid_mappings: tuple[IdMapping, ...]
    gid_mappings: tuple[IdMapping, ...]
    sysfs_read_only: bool

    @property
    def userns(self) -> bool:
        """Whether the container's root is mapped to an unprivileged host uid."""
        return "user" in self.namespaces


def _capabilities(base: frozenset[str], config: ContainerConfig) -> frozenset[str]:
    """Apply ``cap_add``/``cap_drop`` as Docker does (``ALL`` allowed in both)."""
    caps = set(base)
    if "ALL" in config.cap_drop:
        caps.clear()
    if "ALL" in config.cap_add:
        caps.update(ALL_CAPABILITIES)
    caps.update(c for c in config.cap_add if c != "ALL")
    caps.difference_update(c for c in config.cap_drop if c != "ALL")
    return frozenset(caps)


def resolve_profile(
    config: ContainerConfig, *, userns_uid_base: int = 100000, userns_size: int = 65536
) -> Profile:
    """Map an isolation level plus the config onto namespaces, privileges and mounts.

    ``profile.network`` is the network the container joins (``host``, ``none`` or a
    network name, see ``_netconfig``): a net namespace of its own unless ``host``,
    whatever the level's default, so ``--network`` may widen or narrow it.
    """
    profile = _level_profile(config, userns_uid_base, userns_size)
    network = resolve_network(config.network, config.isolation.value)
    namespaces = tuple(n for n in profile.namespaces if n != "net")
    if network != HOST:
        # before "cgroup": the plan unshares the cgroup namespace last, after placing
        at = namespaces.index("cgroup") if "cgroup" in namespaces else len(namespaces)
        namespaces = (*namespaces[:at], "net", *namespaces[at:])
    return replace(profile, namespaces=namespaces, network=network)


def _level_profile(config: ContainerConfig, userns_uid_base: int, userns_size: int) -> Profile:
    """The isolation level's table row (its default network included)."""
    level = config.isolation
    if level is IsolationType.MINIMAL:
        return Profile(
            isolation=level,
            namespaces=("pid", "mount"),
            capabilities=_capabilities(
                frozenset(ALL_CAPABILITIES) - HOST_DANGEROUS_CAPABILITIES, config
            ),
            no_new_privs=False,
            seccomp=False,
            masked_paths=(),
            # Not in the guide's table, but host root with CAP_SYS_ADMIN must not
            # rewrite the host's sysctls through a writable /proc/sys by accident.
            readonly_paths=READONLY_PATHS,
            read_only_root=config.read_only,
            tmpfs_tmp=False,
            network="host",
            uid_mappings=(),
            gid_mappings=(),
            sysfs_read_only=True,
        )
    if level is IsolationType.STANDARD:
        return Profile(
            isolation=level,
            namespaces=("pid", "mount", "uts", "ipc", "net", "cgroup"),
            capabilities=_capabilities(DOCKER_DEFAULT_CAPABILITIES, config),
            no_new_privs=True,
            seccomp=True,
            masked_paths=MASKED_PATHS,
            readonly_paths=READONLY_PATHS,
            read_only_root=config.read_only,
            tmpfs_tmp=False,
            network="loopback",
            uid_mappings=(),
            gid_mappings=(),
            sysfs_read_only=True,
        )
    mapping = (IdMapping(0, userns_uid_base, userns_size),)
    return Profile(
        isolation=level,
        namespaces=("user", "pid", "mount", "uts", "ipc", "net", "cgroup", "time"),
        capabilities=_capabilities(frozenset(), config),
        no_new_privs=True,
        seccomp=True,
        masked_paths=MASKED_PATHS,
        readonly_paths=READONLY_PATHS,
        read_only_root=True,
        tmpfs_tmp=True,
        network="loopback",
        uid_mappings=mapping,
        gid_mappings=mapping,
        sysfs_read_only=True,
    )

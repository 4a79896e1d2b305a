"""Linux capability names and the sets the isolation levels start from (pure data)."""

from __future__ import annotations

# In kernel order (capability number = index), as in linux/capability.h.
ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

CAPABILITY_NUMBERS: dict[str, int] = {name: i for i, name in enumerate(ALL_CAPABILITIES)}

# Docker's default set (moby oci/caps/defaults.go): what a STANDARD container keeps.
DOCKER_DEFAULT_CAPABILITIES: frozenset[str] = frozenset(
    {
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
        "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
    }
)  # fmt: skip

# What MINIMAL takes away from host root: the capabilities that reach past the
# container into the whole machine (kernel modules, raw devices, clocks, reboot,
# LSM policy, audit configuration, BPF and perf).
HOST_DANGEROUS_CAPABILITIES: frozenset[str] = frozenset(
    {
        "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_BOOT", "CAP_SYS_TIME", "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE", "CAP_AUDIT_CONTROL", "CAP_SYSLOG", "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_PACCT", "CAP_LINUX_IMMUTABLE",
    }
)  # fmt: skip


def normalize_capability(name: str) -> str:
    """Accept ``NET_ADMIN``, ``cap_net_admin`` or ``ALL``; refuse unknown names."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in CAPABILITY_NUMBERS:
        raise ValueError(f"unknown capability {name!r}: see capabilities(7) for the names")
    return upper

"""OCI bundles for crun and runc, as close to a STANDARD Codex-32 container as they go.

The same built template is the root (not a copy). What a STANDARD container gets,
the bundle asks for too: pid, mount, uts, ipc, net and cgroup namespaces; Docker's
14 capabilities; no_new_privs; Docker's masked and read-only paths; /proc, a tmpfs
/dev with devpts, shm and mqueue, a read-only /sys; and, unless ``seccomp=False``,
Docker's default seccomp profile with the rules Codex-32 selects for those
capabilities (native architecture only, as Codex-32 compiles it). What differs is
said in docs/performance.md: crun and runc get the template directory itself as
their root, Codex-32 mounts an overlay over it per container.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Docker's default capability set (moby oci/caps/defaults.go), as STANDARD keeps.
DOCKER_CAPABILITIES: tuple[str, ...] = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SETFCAP",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
)  # fmt: skip

MASKED_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip

READONLY_PATHS: tuple[str, ...] = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def _mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip


def seccomp_section(rules: Iterable[Any], default_errno: int, machine: str) -> dict[str, Any]:
    """An OCI ``linux.seccomp`` from Codex-32's selected rules (``SeccompRule`` tuples).

    Each rule has ``names``, ``errno_ret`` (None: allow) and ``args`` (``arg``, ``op``,
    ``value``, ``value_two``), as ``codex32._linux.seccomp.select_rules`` returns them.
    """
    syscalls: list[dict[str, Any]] = []
    for rule in rules:
        entry: dict[str, Any] = {"names": list(rule.names)}
        if rule.errno_ret is None:
            entry["action"] = "SCMP_ACT_ALLOW"
        else:
            entry["action"] = "SCMP_ACT_ERRNO"
            entry["errnoRet"] = int(rule.errno_ret)
        if rule.args:
            entry["args"] = [
                {"index": a.arg, "value": a.value, "valueTwo": a.value_two, "op": a.op}
                for a in rule.args
            ]
        syscalls.append(entry)
    section: dict[str, Any] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": default_errno,
        "syscalls": syscalls,
    }
    if machine in _ARCH:
        section["architectures"] = [_ARCH[machine]]
    return section


def codex32_seccomp() -> dict[str, Any] | None:
    """Docker's default profile as Codex-32 selects it for STANDARD, in OCI form.

    ``None`` if the engine's seccomp module cannot be read (the bench then says so).
    """
    try:
        from codex32._linux import seccomp
    except ImportError:
        return None
    try:
        profile = seccomp.load_profile()
        rules = seccomp.select_rules(frozenset(DOCKER_CAPABILITIES), profile)
    except (AttributeError, RuntimeError, TypeError, OSError):
        return None
    return seccomp_section(rules, profile.default_errno, os.uname().machine)


def make_config(
    rootfs: str,
    args: Sequence[str],
    *,
    cgroups_path: str,
    seccomp: dict[str, Any] | None,
    hostname: str = "bench",
) -> dict[str, Any]:
    """A runtime-spec 1.0 ``config.json`` for one container of the bench."""
    caps = list(DOCKER_CAPABILITIES)
    linux: dict[str, Any] = {
        "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")],
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "cgroupsPath": cgroups_path,
        "resources": {},
    }
    if seccomp is not None:
        linux["seccomp"] = seccomp
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [PATH_ENV, f"HOSTNAME={hostname}"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": _mounts(),
        "linux": linux,
    }


def write_bundle(directory: Path, config: dict[str, Any]) -> Path:
    """Write ``config.json`` into ``directory`` (created); return the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=1))
    return directory

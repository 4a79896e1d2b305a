"""Which device nodes a container may use: Docker's default rules plus ``--device``.

The rules are the devices cgroup's (v1 ``devices.allow``) and what the v2 BPF device
program checks (``_cgroups/devicefilter.py``): everything is denied, then these are
allowed. A node the rules do not allow cannot be opened (EPERM) even when it exists
or is created with mknod: that is what makes keeping CAP_MKNOD harmless, as in Docker.
MINIMAL gets no rules (``None``): it runs as host root with the host's devices.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from codex32.config.container import ContainerConfig, IsolationType

#: A major or minor number of ``*`` (any).
ANY = -1


@dataclass(frozen=True)
class DeviceRule:
    """``TYPE MAJOR:MINOR ACCESS`` of an allowed device: type ``c``, ``b`` or ``a`` (all),
    ``ANY`` for ``*``, access a subset of ``rwm`` (read, write, mknod)."""

    type: str
    major: int
    minor: int
    access: str

    def __str__(self) -> str:
        """The devices cgroup's line (``c 1:3 rwm``)."""
        number = "" if self.type == "a" else f" {_num(self.major)}:{_num(self.minor)}"
        return f"{self.type}{number} {self.access}"


def _num(value: int) -> str:
    return "*" if value == ANY else str(value)


#: Docker's default rules (moby oci/devices_linux.go and runc's AllowedDevices): mknod
#: of any node; null, zero, full, random, urandom, tty, console, ptmx; the
#: container's own pseudo-terminals (devpts, major 136). fuse (c 10:229) is left out:
#: ``--device /dev/fuse`` asks for it.
DEFAULT_RULES: tuple[DeviceRule, ...] = (
    DeviceRule("c", ANY, ANY, "m"),
    DeviceRule("b", ANY, ANY, "m"),
    DeviceRule("c", 1, 3, "rwm"),  # null
    DeviceRule("c", 1, 5, "rwm"),  # zero
    DeviceRule("c", 1, 7, "rwm"),  # full
    DeviceRule("c", 1, 8, "rwm"),  # random
    DeviceRule("c", 1, 9, "rwm"),  # urandom
    DeviceRule("c", 5, 0, "rwm"),  # tty
    DeviceRule("c", 5, 1, "rwm"),  # console
    DeviceRule("c", 5, 2, "rwm"),  # ptmx
    DeviceRule("c", 136, ANY, "rwm"),  # the container's pts
)


def rule_for(path: str, access: str) -> DeviceRule:
    """The rule that allows the device node at ``path`` (read now: numbers change across
    reboots and re-attachments, so they are never stored)."""
    info = os.stat(path)
    if stat.S_ISCHR(info.st_mode):
        kind = "c"
    elif stat.S_ISBLK(info.st_mode):
        kind = "b"
    else:
        raise OSError(0, f"{path} is no longer a device node", path)
    return DeviceRule(kind, os.major(info.st_rdev), os.minor(info.st_rdev), access)


def device_rules(config: ContainerConfig) -> tuple[DeviceRule, ...] | None:
    """The allow list for ``config``'s cgroup, or ``None`` to leave the host's (MINIMAL)."""
    if config.isolation is IsolationType.MINIMAL:
        return None
    extra = tuple(rule_for(d.host_path, d.permissions) for d in config.devices)
    return DEFAULT_RULES + extra

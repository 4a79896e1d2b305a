"""Compile a config, its isolation profile and its image's config into a launch plan.

The plan is plain data (JSON-able dicts), as bubblewrap's SetupOp list or runc's
converted spec: it can be printed (``codex32 plan``), tested without root, and is
what the set-up process in ``_init`` executes, step by step, in order. Field names
follow the OCI runtime-spec where one exists (``process.args``, ``process.env``,
``process.cwd``, ``linux.namespaces``, ``uidMappings``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from codex32._images.image import ImageConfig
from codex32._plan.profiles import IdMapping, Profile
from codex32.config.container import ContainerConfig

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# On the container's own /dev tmpfs: never inside a template bind such as /usr.
INIT_PATH = "/dev/init"
TINI_STATIC = "/usr/bin/tini-static"
#: The size of the tmpfs a read-only root gets for /tmp and the template's writable
#: paths (an unsized tmpfs may take half the host's RAM). ``--tmpfs /tmp:size=1g``
#: replaces it; its pages are charged to the container's memory cgroup either way.
TMP_SIZE = 64 * 1024**2

# Linux's RLIMIT_* numbers (asm-generic/resource.h; Python's resource lacks some).
_RLIMITS = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6,
    "nofile": 7, "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12,
    "nice": 13, "rtprio": 14, "rttime": 15,
}  # fmt: skip

Step = dict[str, Any]


@dataclass(frozen=True)
class ContainerPaths:
    """Host paths of one container's directory."""

    rootfs: str
    upper: str
    work: str
    lower: tuple[str, ...]
    #: When set, ``lower`` is relative to it: the set-up process mounts from there, so
    #: that many layers fit in the kernel's one-page limit on mount options.
    lower_base: str | None = None


@dataclass
class Plan:
    """Everything the set-up process needs, in the order it does it."""

    container: str
    namespaces: list[str]
    uid_mappings: list[dict[str, int]]
    gid_mappings: list[dict[str, int]]
    steps: list[Step] = field(default_factory=list)

    def to_json(self) -> str:
        """The wire and file form (compact: JSON's C encoder; ``plan.json``)."""
        return json.dumps(self._data(), separators=(",", ":"))

    def _data(self) -> dict[str, Any]:
        # Not ``asdict``: it deep-copies every step, and steps are JSON data already.
        return {
            "container": self.container,
            "namespaces": self.namespaces,
            "uid_mappings": self.uid_mappings,
            "gid_mappings": self.gid_mappings,
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Inverse of ``to_json``/``describe``."""
        data = json.loads(text)
        return cls(
            container=str(data["container"]),
            namespaces=list(data["namespaces"]),
            uid_mappings=list(data["uid_mappings"]),
            gid_mappings=list(data["gid_mappings"]),
            steps=list(data["steps"]),
        )

    def describe(self) -> str:
        """A readable, indented listing for ``codex32 plan``."""
        return json.dumps(self._data(), indent=2)


def _mappings(items: tuple[IdMapping, ...]) -> list[dict[str, int]]:
    return [{"containerID": m.container_id, "hostID": m.host_id, "size": m.size} for m in items]


def shape_plan(container: str, profile: Profile) -> Plan:
    """A plan without steps: the namespaces and id maps a profile's containers get
    (what a pooled sandbox is made to)."""
    return Plan(
        container=container,
        # The pid, user and time namespaces are entered before the fork that makes
        # PID 1; the cgroup namespace after the engine has placed PID 1 in its cgroup.
        namespaces=[n for n in profile.namespaces if n != "cgroup"],
        uid_mappings=_mappings(profile.uid_mappings),
        gid_mappings=_mappings(profile.gid_mappings),
    )


def build_plan(
    container: str,
    config: ContainerConfig,
    profile: Profile,
    image: ImageConfig,
    paths: ContainerPaths,
    *,
    hostname: str,
    seccomp_program: str | None = None,
    network_files: tuple[tuple[str, str], ...] = (),
) -> Plan:
    """The ordered set-up steps: mounts, pivot_root, hostname, limits, privileges, exec."""
    ns = set(profile.namespaces)
    plan = shape_plan(container, profile)
    steps = plan.steps
    if "cgroup" in ns:
        steps.append({"op": "unshare", "namespaces": ["cgroup"]})
    steps.append({"op": "propagation", "mode": "rprivate"})
    steps.append(
        {
            "op": "overlay",
            "lower": list(paths.lower),
            "lower_base": paths.lower_base,
            "upper": paths.upper,
            "work": paths.work,
            "target": paths.rootfs,
            "userxattr": profile.userns,
        }
    )
    for bind in image.binds:
        steps.append(
            {
                "op": "bind",
                "source": bind.source,
                "target": bind.target,
                "read_only": True,
                "optional": bind.optional,
                "what": "template bind",
            }
        )
    steps.append({"op": "proc", "target": "/proc"})
    steps.append({"op": "sysfs", "target": "/sys", "read_only": profile.sysfs_read_only})
    steps.append({"op": "dev", "target": "/dev", "mqueue": "ipc" in ns})
    for device in config.devices:
        # Bound, not made with mknod (refused in a user namespace): the node is then a
        # mount of the host's devtmpfs, reachable although /dev itself is nodev.
        steps.append(
            {
                "op": "bind",
                "source": device.host_path,
                "target": device.container_path,
                "read_only": "w" not in device.permissions,
                "optional": False,
                "what": "device",
            }
        )
    read_only_root = profile.read_only_root or config.read_only
    if profile.tmpfs_tmp or read_only_root:
        # A read-only root still needs somewhere to write: /tmp and the template's
        # writable paths become private tmpfs.
        for target in dict.fromkeys(["/tmp", *image.writable]):
            if not any(t.target == target for t in config.tmpfs):
                steps.append(_tmpfs_step(target, TMP_SIZE, 0o1777, ["nosuid", "nodev"]))
    for source, target in network_files:
        # /etc/hosts, /etc/resolv.conf: the engine rewrites them in place (peers come
        # and go), so read-only; before the volumes, so a user's own bind wins.
        steps.append(
            {
                "op": "bind",
                "source": source,
                "target": target,
                "read_only": True,
                "optional": False,
                "what": "network file",
            }
        )
    steps.extend(_user_mounts(config))
    if profile.masked_paths:
        steps.append({"op": "mask", "paths": list(profile.masked_paths)})
    if profile.readonly_paths:
        steps.append({"op": "readonly_paths", "paths": list(profile.readonly_paths)})
    args = command_args(config, image)
    if config.init:
        steps.append(
            {
                "op": "bind",
                "source": TINI_STATIC,
                "target": INIT_PATH,
                "read_only": True,
                "optional": False,
                "what": "init",
            }
        )
    cwd = config.working_dir or image.workdir or "/"
    steps.append({"op": "mkdir", "target": cwd})
    steps.append({"op": "pivot_root", "rootfs": paths.rootfs})
    if config.tty:  # a terminal of its own /dev/pts, handed to the monitor
        steps.append({"op": "console", "ptmx": "/dev/pts/ptmx"})
    if read_only_root:
        steps.append({"op": "remount_root", "read_only": True})
    if "net" in ns:
        steps.append({"op": "loopback_up"})
    if "uts" in ns:
        steps.append({"op": "hostname", "name": hostname})
    limits = _rlimits(config)
    if limits:
        steps.append({"op": "rlimits", "limits": limits})
    caps = sorted(profile.capabilities)
    steps.append({"op": "bounding_set", "keep": caps})
    steps.append({"op": "user", "user": config.user or image.user or "0:0"})
    steps.append({"op": "capabilities", "keep": caps})
    if profile.no_new_privs:
        steps.append({"op": "no_new_privs"})
    if profile.seccomp:
        steps.append(
            {
                "op": "seccomp",
                "profile": "default",
                "capabilities": caps,
                "program": seccomp_program,
            }
        )
    env = {"PATH": DEFAULT_PATH, **image.env, "HOSTNAME": hostname, **config.env}
    steps.append(
        {
            "op": "exec",
            "args": args,
            "init": INIT_PATH if config.init else None,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd,
        }
    )
    return plan


def command_args(config: ContainerConfig, image: ImageConfig) -> list[str]:
    """Docker's rules: the entrypoint (``--entrypoint`` or the image's) followed by the
    command (``run``'s, else the image's Cmd, which ``--entrypoint`` drops)."""
    entrypoint = list(image.entrypoint) if config.entrypoint is None else list(config.entrypoint)
    if config.command:
        command = list(config.command)
    elif config.entrypoint is not None:
        command = []
    else:
        command = list(image.command)
    return entrypoint + command


def _user_mounts(config: ContainerConfig) -> list[Step]:
    """The config's tmpfs and volumes, parents before children (as Docker sorts them
    for runc): ``-v X:/data --tmpfs /data/t`` mounts /data first, then the tmpfs in it.

    By the number of path components, stable, so equal depths keep the config's order.
    """
    mounts: list[Step] = [
        _tmpfs_step(t.target, t.size_bytes, t.mode, list(t.flags)) for t in config.tmpfs
    ]
    mounts += [
        {
            "op": "bind",
            "source": volume.source,
            "target": volume.target,
            "read_only": volume.read_only,
            "optional": False,
            "what": "volume",
        }
        for volume in config.volumes
    ]
    return sorted(mounts, key=lambda step: len(PurePosixPath(step["target"]).parts))


def _tmpfs_step(target: str, size: int | None, mode: int, flags: list[str]) -> Step:
    return {"op": "tmpfs", "target": target, "size": size, "mode": mode, "flags": flags}


def _rlimits(config: ContainerConfig) -> list[list[int]]:
    """``[[resource, soft, hard]]`` with -1 for unlimited."""
    limits: dict[int, tuple[int, int]] = {}
    if config.resources.max_open_files is not None:
        n = config.resources.max_open_files
        limits[_RLIMITS["nofile"]] = (n, n)
    for ulimit in config.ulimits:
        limits[_RLIMITS[ulimit.name]] = (ulimit.soft, ulimit.hard)
    return [[res, soft, hard] for res, (soft, hard) in limits.items()]

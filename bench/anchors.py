"""Podman and Docker, the CLIs a user would otherwise pick, run beside Codex-32.

Both run the bench's busybox rootfs (imported as an image from a tar of the template)
with ``--network none``, in the bench's own network namespace, with state of their own
under the bench's temporary directory:

* Podman: Debian's podman with ``--runtime runc --cgroup-manager cgroupfs`` (crun
  refuses this hybrid host), ``--root``/``--runroot`` under the bench's directory, its
  containers' cgroups beneath the bench's own (a relative ``--cgroup-parent``, which
  runc resolves from its own cgroup), conmon left in the caller's cgroup
  (``--cgroups no-conmon``), and ``--ulimit`` given explicitly where the host's hard
  limit is below Podman's default (else runc fails to set the rlimits).
* Docker: Debian's docker.io, a dockerd started here with its data and exec roots,
  socket, pid file and trust key under the bench's directory, ``--iptables=false
  --bridge=none``, cgroups beneath its own; stopped at the end, its directory removed.

Each keeps a monitor per running container (conmon, containerd-shim): ``monitors``
measures their memory as the memory section measures Codex-32's monitors.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from .host import stop_daemon

IMAGE = "c32bench-busybox"
#: Podman's defaults for a rootful container (containers.conf), and the NPROC limit it
#: gives itself (and so conmon and runc) at start-up.
PODMAN_NOFILE = 1048576
PODMAN_NPROC = 32768


def _run(argv: list[str], *, stdin: bytes | None = None, timeout: float = 120) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}...: {result.stderr.decode()[-300:].strip()}")
    return result.stdout.decode().strip()


def _rootfs_tar(rootfs: str) -> bytes:
    return subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True,
                          check=True).stdout  # fmt: skip


def _ulimits() -> list[str]:
    """``--ulimit`` options for the limits whose host hard limit is below Podman's default."""
    out = []
    for name, limit, default in (("nofile", resource.RLIMIT_NOFILE, PODMAN_NOFILE),
                                 ("nproc", resource.RLIMIT_NPROC, PODMAN_NPROC)):  # fmt: skip
        hard = resource.getrlimit(limit)[1]
        if hard != resource.RLIM_INFINITY and hard < default:
            out += ["--ulimit", f"{name}={hard}:{hard}"]
        elif name == "nproc":
            out += ["--ulimit", f"{name}={default}:{default}"]
    return out


def uss(pid: int) -> tuple[int, int, int] | None:
    """(USS, PSS, RSS) of ``pid``, or None if it is gone."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return None
    return int(info.uss), int(info.pss), int(info.rss)


class Podman:
    """Debian's podman on storage of its own."""

    key = "podman"

    def __init__(self, tmp: Path, cgroup_parent: str) -> None:
        self.path = shutil.which("podman")
        self.dir = tmp / "podman"
        self.cgroup_parent = cgroup_parent
        self.ready = False

    def base(self) -> list[str]:
        assert self.path is not None
        d = self.dir
        return [self.path, "--root", str(d / "root"), "--runroot", str(d / "run"),
                "--tmpdir", str(d / "tmp"), "--storage-driver", "overlay", "--runtime", "runc",
                "--cgroup-manager", "cgroupfs", "--events-backend", "none"]  # fmt: skip

    def prepare(self, rootfs: str) -> None:
        if self.path is None:
            raise RuntimeError("podman is not installed (apt-get install podman)")
        self.dir.mkdir(mode=0o700)
        _run([*self.base(), "import", "-", IMAGE], stdin=_rootfs_tar(rootfs))
        self.ready = True

    def run_argv(self, *args: str, detach: bool = False) -> list[str]:
        mode = ["-d"] if detach else ["--rm"]
        return [*self.base(), "run", *mode, "--network", "none", "--cgroups", "no-conmon",
                "--cgroup-parent", self.cgroup_parent, *_ulimits(), IMAGE, *args]  # fmt: skip

    def monitor_pid(self, cid: str) -> int:
        return int(_run([*self.base(), "inspect", "-f", "{{.State.ConmonPid}}", cid]))

    def remove(self, ids: list[str]) -> None:
        if ids:
            _run([*self.base(), "rm", "-f", "-t", "0", *ids])

    def close(self) -> list[str]:
        if not self.ready:
            return []
        try:
            _run([*self.base(), "rm", "-a", "-f", "-t", "0"])
            _run([*self.base(), "system", "reset", "-f"])
        except Exception as exc:
            return [f"podman: {exc}"]
        return []


class Docker:
    """Debian's docker.io with a dockerd of the bench's own."""

    key = "docker"

    def __init__(self, tmp: Path, cgroup_parent: str) -> None:
        self.dockerd = shutil.which("dockerd")
        # /usr/local/bin may hold another docker client: Debian's is /usr/bin/docker.
        self.client = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else None
        self.dir = tmp / "docker"
        self.cgroup_parent = cgroup_parent
        self.socket = self.dir / "docker.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        # dockerd always makes /run/docker/plugins, whatever its exec root: removed at the
        # end if this run made it and it is still empty.
        self.made_run_dir = not os.path.exists("/run/docker")

    def base(self) -> list[str]:
        assert self.client is not None
        return [self.client, "-H", f"unix://{self.socket}"]

    def prepare(self, rootfs: str) -> None:
        if self.dockerd is None or self.client is None:
            raise RuntimeError("docker.io is not installed (apt-get install docker.io)")
        self.dir.mkdir(mode=0o700)
        # The trust key (dockerd 20.10 writes /etc/docker/key.json by default) goes here too.
        config = {"deprecated-key-path": str(self.dir / "key.json")}
        (self.dir / "daemon.json").write_text(json.dumps(config) + "\n")
        log = open(self.dir / "dockerd.log", "wb")  # noqa: SIM115 (kept by the daemon)
        self.proc = subprocess.Popen(
            [self.dockerd, "--config-file", str(self.dir / "daemon.json"),
             "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
             "--pidfile", str(self.dir / "docker.pid"), "--host", f"unix://{self.socket}",
             "--iptables=false", "--ip6tables=false", "--ip-forward=false",
             "--ip-masq=false", "--bridge=none", "--storage-driver", "overlay2",
             "--exec-opt", "native.cgroupdriver=cgroupfs",
             "--cgroup-parent", self.cgroup_parent, "--log-level", "warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited (see {self.dir / 'dockerd.log'})")
            with contextlib.suppress(RuntimeError):
                if self.socket.exists():
                    _run([*self.base(), "version", "-f", "{{.Server.Version}}"], timeout=10)
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("dockerd did not answer within 60 s")
            time.sleep(0.2)
        _run([*self.base(), "import", "-", IMAGE], stdin=_rootfs_tar(rootfs))

    def run_argv(self, *args: str, detach: bool = False) -> list[str]:
        mode = ["-d"] if detach else ["--rm"]
        return [*self.base(), "run", *mode, "--network", "none", IMAGE, *args]

    def monitor_pid(self, cid: str) -> int:
        pid = int(_run([*self.base(), "inspect", "-f", "{{.State.Pid}}", cid]))
        return psutil.Process(pid).ppid()  # containerd-shim-runc-v2

    def remove(self, ids: list[str]) -> None:
        if ids:
            _run([*self.base(), "rm", "-f", *ids])

    def close(self) -> list[str]:
        if self.proc is None:
            return []
        problems = []
        with contextlib.suppress(Exception):
            ids = _run([*self.base(), "ps", "-a", "-q"], timeout=30).split()
            self.remove(ids)
        problems += stop_daemon(self.proc, "dockerd")
        self.proc = None
        if self.made_run_dir:
            for leftover in ("/run/docker/plugins", "/run/docker"):
                with contextlib.suppress(OSError):
                    os.rmdir(leftover)
        return problems


Anchor = Podman | Docker


def unmount_under(directory: Path) -> None:
    """Lazily unmount what a daemon left mounted beneath ``directory`` (deepest first)."""
    prefix = str(directory).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def monitors(anchor: Anchor, count: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Start ``count`` detached ``sleep`` containers; their monitors' median memory."""
    ids: list[str] = []
    try:
        for _ in range(count):
            ids.append(_run(anchor.run_argv("sleep", "600", detach=True)).splitlines()[-1])
        samples = [s for s in (uss(anchor.monitor_pid(c)) for c in ids) if s is not None]
    finally:
        anchor.remove(ids)
    if not samples:
        raise RuntimeError(f"{anchor.key}: no monitor found")
    log(f"memory: {anchor.key}: {len(samples)} monitors measured")
    return {
        "key": anchor.key,
        "monitor": "conmon" if anchor.key == "podman" else "containerd-shim-runc-v2",
        "n": len(samples),
        "uss_median": statistics.median(s[0] for s in samples),
        "pss_median": statistics.median(s[1] for s in samples),
        "rss_median": statistics.median(s[2] for s in samples),
    }

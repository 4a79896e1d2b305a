"""The host as the bench sees it: its own cgroups, the tools, the interpreters.

The bench creates cgroups only beneath the ones it is in (``/proc/self/cgroup``),
under names of its own, and removes them all at the end.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = "/sys/fs/cgroup"
REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
SYSTEM_PYTHON = Path("/usr/bin/python3")


@dataclass(frozen=True)
class Hierarchy:
    """One cgroup hierarchy this process is in: its mount point and our path in it."""

    controllers: str  # as /proc/self/cgroup names it: "memory", "name=systemd", "" (v2)
    mountpoint: str
    own_path: str

    def directory(self, *names: str) -> str:
        """``mountpoint + own_path + names``: a cgroup beneath our own."""
        return os.path.join(self.mountpoint + self.own_path.rstrip("/"), *names)


def _cgroup_mounts() -> list[tuple[str, set[str], str, str]]:
    """(fstype, super options, mount point, mount root) of every cgroup mount."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3]
            if fstype in ("cgroup", "cgroup2"):
                mounts.append((fstype, set(options.split(",")), fields[4], fields[3]))
    return mounts


def own_hierarchies() -> list[Hierarchy]:
    """Every hierarchy in ``/proc/self/cgroup`` that is mounted, with our path in it."""
    mounts = _cgroup_mounts()
    found = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            wanted = set(controllers.split(",")) if controllers else set()
            for fstype, options, mountpoint, root in mounts:
                if (not wanted and fstype == "cgroup2") or (
                    wanted and fstype == "cgroup" and wanted <= options
                ):
                    if root != "/" and (path + "/").startswith(root.rstrip("/") + "/"):
                        path = path[len(root.rstrip("/")) :] or "/"
                    found.append(Hierarchy(controllers, mountpoint, path))
                    break
    return found


def _procs_in(tree: str) -> list[int]:
    pids = []
    for directory, _dirs, files in os.walk(tree):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError), open(os.path.join(directory, "cgroup.procs")) as f:
                pids += [int(p) for p in f.read().split()]
    return pids


def remove_cgroup_trees(names: list[str], timeout: float = 10.0) -> list[str]:
    """Kill what is left in our cgroups called ``names`` (beneath our own), rmdir them.

    Only processes the bench started can be in these trees (its containers). Returns
    the directories that could not be removed.
    """
    trees = [
        h.directory(name)
        for h in own_hierarchies()
        for name in names
        if os.path.isdir(h.directory(name))
    ]
    deadline = time.monotonic() + timeout
    left = trees
    while left:
        for tree in left:
            for pid in _procs_in(tree):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        still = []
        for tree in left:
            for directory, _dirs, _files in sorted(os.walk(tree), key=lambda w: -len(w[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
            if os.path.isdir(tree):
                still.append(tree)
        left = still
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return left


def private_network() -> None:
    """Move the bench (and all it starts from now on) into a network namespace of its own.

    The engine's default bridge, the containers' veths and dockerd then never touch the
    machine's real network namespace; only loopback is up, as in the tests
    (tests/conftest.py ``isolated_host_network``). Call before any thread starts.
    """
    from codex32._linux import syscalls

    syscalls.unshare(syscalls.CLONE_NEWNET)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def net_links() -> set[str]:
    """The network interfaces of the host's namespace."""
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def nft_tables() -> set[str] | None:
    """``family name`` of every nftables table (``None`` without nft)."""
    if shutil.which("nft") is None:
        return None
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        return None
    return {line.removeprefix("table ").strip() for line in result.stdout.splitlines() if line}


def remove_new_network_state(
    links_before: set[str], tables_before: set[str] | None, prefixes: tuple[str, ...]
) -> list[str]:
    """Delete bridges named with ``prefixes`` that the run created and that nothing is
    attached to any more, then nftables tables named so that the run created.

    (The engine keeps its default bridge and NAT table, as Docker keeps docker0; a
    bench run leaves the host as it found it.) Returns what was removed.
    """
    removed = []
    for name in sorted(net_links() - links_before):
        if not name.startswith(prefixes) or not os.path.isdir(f"/sys/class/net/{name}/bridge"):
            continue
        if os.listdir(f"/sys/class/net/{name}/brif"):
            continue  # someone's interface is on it
        subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
        removed.append(f"bridge {name}")
    after = nft_tables()
    if removed and after is not None and tables_before is not None:
        for table in sorted(after - tables_before):
            if table.split()[-1].startswith(prefixes):
                subprocess.run(["nft", "delete", "table", *table.split()], capture_output=True,
                               check=False)  # fmt: skip
                removed.append(f"nftables table {table}")
    return removed


def tool_version(argv: list[str]) -> str | None:
    """The first line of ``argv`` (``crun --version``), or ``None`` if it is missing."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def revision() -> str:
    """The checkout's commit, and whether codex32/ has changes not committed."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "codex32"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in codex32/' if dirty else ''}"


def load_average() -> str:
    """The 1-minute load average (other work on the machine skews every figure)."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def facts() -> dict[str, str]:
    """What the figures were taken on."""
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = ""
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "codex32 revision": revision(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
        "load average (1, 5, 15 min) at start": load,
        "bench interpreter": f"{sys.executable} (Python {platform.python_version()})",
        "crun": tool_version(["crun", "--version"]) or "missing",
        "runc": tool_version(["runc", "--version"]) or "missing",
        "bwrap": tool_version(["bwrap", "--version"]) or "missing",
        "podman": tool_version(["podman", "--version"]) or "missing",
        "docker": tool_version(["/usr/bin/docker", "--version"]) or "missing",
    }


def stop_daemon(proc: subprocess.Popen[bytes], name: str, timeout: float = 30) -> list[str]:
    """SIGTERM a daemon the bench started and wait; SIGKILL after ``timeout`` (said so)."""
    if proc.poll() is not None:
        return []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return [f"{name} did not stop within {timeout:.0f} s (killed)"]
    return []

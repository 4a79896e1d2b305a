"""Shared helpers of the runtime integration tests (real containers, real kernel).

Each test starts containers from the session's engine (``tests/conftest.py``) and
reads what the kernel says from inside them. The helpers here build the usual
``sh -c`` configs, parse what the container printed, and take snapshots of
everything a container could leave behind (its directory, its name, a host mount,
a set-up process) so that a test can check that a failure left nothing.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from codex32 import ContainerConfig, ContainerEngine, IsolationType

#: The test session's tag (set by the root conftest): scratch directories and cgroup
#: parents carry it, so the leak checks can tell this session's objects from others'.
SESSION_TAG = os.environ["CODEX32_TEST_SESSION"]

BUSYBOX = "busybox"
PYTHON = "python"
LEVELS = (IsolationType.MINIMAL, IsolationType.STANDARD, IsolationType.STRICT)
NAMESPACES = ("pid", "mnt", "uts", "ipc", "net", "cgroup", "user", "time")
EROFS_TEXT = "Read-only file system"


def sh(
    script: str,
    *,
    isolation: IsolationType = IsolationType.STANDARD,
    image: str = BUSYBOX,
    **options: Any,
) -> ContainerConfig:
    """A self-removing container that runs ``sh -c SCRIPT``."""
    return ContainerConfig(
        image=image,
        command=["sh", "-c", script],
        isolation=isolation,
        auto_remove=True,
        **options,
    )


def output_of(engine: ContainerEngine, config: ContainerConfig) -> str:
    """Run ``config``; it must exit 0; return what it printed on stdout."""
    result = engine.containers.run(config)
    assert result.exit_code == 0, (
        f"container exited {result.exit_code}\n"
        f"stdout: {result.output.decode(errors='replace')}\n"
        f"stderr: {result.error_output.decode(errors='replace')}"
    )
    return result.output.decode()


def facts(text: str) -> dict[str, str]:
    """``key=value`` lines (the first ``=`` splits) as a dict; other lines are ignored."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key:
            found[key] = value
    return found


def status_fields(text: str) -> dict[str, str]:
    """``Name:\\tvalue`` lines of /proc/PID/status."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/PID/mountinfo, the fields the tests look at."""

    mount_point: str
    options: frozenset[str]
    fstype: str
    source: str


def mountinfo(text: str) -> dict[str, MountEntry]:
    """Mount point -> the topmost mount there (later lines win, as the kernel stacks)."""
    entries: dict[str, MountEntry] = {}
    for line in text.splitlines():
        if " - " not in line:
            continue
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) < 6:
            continue
        point = fields[4].replace("\\040", " ")
        fstype, source = [*tail.split(), "", ""][:2]
        entries[point] = MountEntry(point, frozenset(fields[5].split(",")), fstype, source)
    return entries


def cap_mask(names: frozenset[str] | set[str]) -> int:
    """The bit mask of capability names, numbered as in linux/capability.h."""
    from codex32.config.capabilities import CAPABILITY_NUMBERS

    mask = 0
    for name in names:
        mask |= 1 << CAPABILITY_NUMBERS[name]
    return mask


def host_status() -> dict[str, str]:
    """The test process's own /proc/self/status."""
    with open("/proc/self/status") as f:
        return status_fields(f.read())


def host_namespaces() -> dict[str, str]:
    """The test process's namespaces, as ``readlink /proc/self/ns/NAME`` shows them."""
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in NAMESPACES}


@contextmanager
def host_tmpdir(mode: int = 0o755) -> Iterator[Path]:
    """A host directory under /tmp that a user-namespaced root can reach.

    pytest's ``tmp_path`` lives below a 0700 directory, which a STRICT container's
    root (an unprivileged host uid) cannot traverse.
    """
    base = os.environ.get("CODEX32_TEST_TMPDIR", "/tmp")
    path = Path(tempfile.mkdtemp(prefix=f"{SESSION_TAG}-it-", dir=base))
    os.chmod(path, mode)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_recipe(recipes: Path, name: str, build_script: str, command: str = "sh") -> None:
    """A rootfs template recipe (template.toml + build.sh) named ``name``."""
    folder = recipes / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "template.toml").write_text(
        f'description = "integration-test template {name}"\n'
        'build = "build.sh"\n'
        f'command = ["{command}"]\n'
    )
    (folder / "build.sh").write_text("set -eu\n" + build_script)


def engine_with_templates(engine: ContainerEngine, recipes: Path) -> ContainerEngine:
    """An engine on the same storage directory whose recipes come from ``recipes``.

    Use it in a ``with`` block: it may start a fork server, which must not outlive the test.
    """
    return ContainerEngine(settings=dataclasses.replace(engine.settings, templates_dir=recipes))


# -- what a container can leave behind -------------------------------------------


def _parent_pids() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def processes_running(argv: list[str]) -> list[int]:
    """Every live process whose arguments are exactly ``argv``."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and cmdline(int(e)) == argv]


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below ``pid`` (default: this test process)."""
    root = os.getpid() if pid is None else pid
    parents = _parent_pids()
    found: list[int] = []
    frontier = [root]
    while frontier:
        current = frontier.pop()
        children = [p for p, parent in parents.items() if parent == current]
        found += children
        frontier += children
    return found


def cmdline(pid: int) -> list[str]:
    """A process's arguments ([] once it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


@dataclass(frozen=True)
class Snapshot:
    """What exists of containers: directories, names, host mounts, set-up processes, cgroups."""

    containers: frozenset[str]
    names: frozenset[str]
    mounts: frozenset[str]
    processes: frozenset[str]
    cgroups: frozenset[str]


def session_cgroups() -> frozenset[str]:
    """Container cgroups beneath this session's cgroup parents, in every hierarchy."""
    found: set[str] = set()
    for top, dirs, _files in os.walk("/sys/fs/cgroup", onerror=lambda _e: None):
        if is_session_name(os.path.basename(top)):
            found.update(os.path.join(top, d) for d in dirs)
            dirs.clear()
    return frozenset(found)


def _listing(path: Path) -> frozenset[str]:
    return frozenset(p.name for p in path.iterdir()) if path.is_dir() else frozenset()


#: How a container's monitor names itself (prctl PR_SET_NAME, ``_monitor.serve``):
#: ``c32mon-`` and 8 hex digits of the id. The stage2 and PID 1 it forks inherit the
#: name, PID 1 until it execs. Monitors are forked by the fork server, so their
#: command line is the server's (``-m codex32._runtime.forkserver``): only the name tells.
MONITOR_NAME_PREFIX = "c32mon-"
#: The engine's fork server: one per engine, long-lived by design, so never counted.
FORK_SERVER_NAME = "codex32-forksrv"
#: A monitor started without the fork server (``-m codex32._runtime.monitor``), until it
#: has named itself.
MONITOR_MODULE = "codex32._runtime.monitor"


def is_session_name(name: str) -> bool:
    """Whether a cgroup (parent) name is this session's: the tag, or the tag and a suffix.

    A prefix test alone would also take another session's ``codex32-test-123`` for
    ``codex32-test-12``'s.
    """
    return name == SESSION_TAG or name.startswith(SESSION_TAG + "-")


def _refers_to(pid: int, storage_dir: Path) -> bool:
    """Whether a process has a file, or its cwd, under ``storage_dir``."""
    prefix = str(storage_dir) + "/"
    links = [f"/proc/{pid}/cwd"]
    try:
        links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    for link in links:
        try:
            if (os.readlink(link) + "/").startswith(prefix):
                return True
        except OSError:
            continue
    return False


def _name_and_state(pid: int) -> tuple[str, str] | None:
    """A process's name (comm) and state letter from /proc/PID/stat; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    close = stat.rindex(")")
    return stat[stat.index("(") + 1 : close], stat[close + 2 : close + 3]


def _session_container(pid: int) -> str | None:
    """The container (its cgroup's name) of this session that ``pid`` runs in, if any.

    The engines of this session put their containers below cgroup parents named
    after the session (``CODEX32_CGROUP_PARENT``), in every hierarchy.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)[-1].split("/")
        for index, part in enumerate(parts[:-1]):
            if is_session_name(part):
                return parts[index + 1]
    return None


def _session_processes(storage_dir: Path) -> frozenset[str]:
    """One look at the processes a container of this session may leave behind.

    * monitors and set-up processes, by their name ``c32mon-*`` (or, before it is
      set, the monitor's module on the command line), that are this session's: below
      this test process (the session engine's fork server is its child), named after
      a container in ``storage_dir``, or holding a file there (the container's log);
      the fork server ``codex32-forksrv`` itself is long-lived and not counted;
    * the containers' own processes, by their cgroup below this session's parents;
      listed once per container (a container's shell loop forks all the time).

    Zombies do not count: a monitor that was no child of ours is reaped by init a
    moment after it exits.
    """
    below = set(descendants())
    ids = {name[:8] for name in _listing(storage_dir / "containers")}
    found: set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        stat = _name_and_state(pid)
        if stat is None or stat[1] == "Z" or stat[0] == FORK_SERVER_NAME:
            continue
        name = stat[0]
        container = _session_container(pid)
        if container is not None:
            found.add(f"processes in the cgroup of container {container}")
            continue
        text = " ".join(cmdline(pid))
        named = name.startswith(MONITOR_NAME_PREFIX)
        if not named and MONITOR_MODULE not in text:
            continue
        if (
            pid in below
            or (named and name[len(MONITOR_NAME_PREFIX) :] in ids)
            or str(storage_dir) in text
            or _refers_to(pid, storage_dir)
        ):
            found.add(f"{pid} {name}: {text}")
    return frozenset(found)


def setup_processes(storage_dir: Path, settle: float = 0.3, timeout: float = 5.0) -> frozenset[str]:
    """Monitors, set-up and container processes of this test session (see above).

    Processes on their way out (a monitor that has just reported a failed start, or
    removed its ``--rm`` container) get a moment to go: the answer is a list that
    stayed the same for ``settle`` seconds, or the last one after ``timeout``.
    Other test sessions on the machine (other storage directories and cgroup
    parents) are not counted.
    """
    found = _session_processes(storage_dir)
    deadline = time.monotonic() + timeout
    steady_since = time.monotonic()
    while found and time.monotonic() - steady_since < settle and time.monotonic() < deadline:
        time.sleep(0.05)
        now = _session_processes(storage_dir)
        if now != found:
            found, steady_since = now, time.monotonic()
    return found


def snapshot(storage_dir: Path) -> Snapshot:
    """Take stock of ``storage_dir``, host mounts, this session's processes and cgroups."""
    with open("/proc/self/mountinfo") as f:
        mounts = frozenset(
            line.strip() for line in f if str(storage_dir) in line or SESSION_TAG in line
        )
    return Snapshot(
        containers=_listing(storage_dir / "containers"),
        names=_listing(storage_dir / "names"),
        mounts=mounts,
        processes=setup_processes(storage_dir),
        cgroups=session_cgroups(),
    )


def assert_nothing_new(before: Snapshot, storage_dir: Path) -> None:
    """No container directory, name, host mount, set-up process or cgroup since ``before``."""
    after = snapshot(storage_dir)
    assert after.containers - before.containers == set(), "container directory left"
    assert after.names - before.names == set(), "container name left"
    assert after.mounts - before.mounts == set(), "host mount left"
    left = after.processes - before.processes
    deadline = time.monotonic() + 5.0  # a monitor still tidying up a failed start
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = setup_processes(storage_dir) - before.processes
    assert left == set(), f"monitor, set-up or container process left: {sorted(left)}"
    assert after.cgroups - before.cgroups == set(), "cgroup left"


def vm_tools_missing() -> list[str]:
    """What the cgroup v2 VM runners (tests/vm/) need and this host lacks, with its package."""
    venv_bin = os.path.dirname(sys.executable)
    path = f"{venv_bin}:{os.environ.get('PATH', '')}"
    missing = [
        f"{tool} ({package})"
        for tool, package in (
            ("vng", "pip install virtme-ng"),
            ("qemu-system-x86_64", "apt-get install qemu-system-x86"),
        )
        if shutil.which(tool, path=path) is None
    ]
    if not glob.glob("/boot/vmlinuz-*"):
        missing.append("/boot/vmlinuz-* (apt-get install linux-image-amd64)")
    return missing


def run_v2_vm_suite(runner: str, *args: str, timeout: int) -> str:
    """Run ``tests/vm/RUNNER`` (boots the stock-kernel VM) and return its output.

    Skips inside the VM itself, and when the VM cannot be built here (naming what is
    missing); fails if the run failed or any test in it was skipped or failed.
    """
    if os.environ.get("CODEX32_REQUIRE_V2") == "1":
        pytest.skip("already inside the VM")
    missing = vm_tools_missing()
    if missing:
        pytest.skip(f"cannot boot the v2 VM, missing: {', '.join(missing)}")
    env = {k: v for k, v in os.environ.items() if k != "CODEX32_VM_TESTS"}
    env["VENV"] = str(Path(sys.executable).parents[1])
    script = Path(__file__).resolve().parents[1] / "vm" / runner
    try:
        result = subprocess.run(
            ["bash", str(script), *args], capture_output=True, text=True, timeout=timeout,
            env=env, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:  # say how far it got (boot? which test?)
        partial = b"".join(
            part if isinstance(part, bytes) else (part or "").encode()
            for part in (exc.stdout, exc.stderr)
        ).decode(errors="replace")
        pytest.fail(f"{runner} did not finish in {timeout} s; its output so far:\n"
                    f"{partial[-6000:]}")  # fmt: skip
    output = result.stdout + result.stderr
    print(output[-4000:])
    assert result.returncode == 0, f"{runner} failed in the VM:\n{output[-4000:]}"
    assert not re.search(r"\d+ (skipped|failed|error)", output)
    return output


def root_disk() -> tuple[str, str]:
    """(device node, MAJ:MIN) of the whole disk holding / ; skip if / is not on one."""
    dev = os.stat("/").st_dev
    entry = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not entry.exists():
        pytest.skip("the root filesystem is not on a block device here")
    disk = entry.resolve()
    if (disk / "partition").exists():
        disk = disk.parent
    node = Path("/dev", disk.name)
    if not node.is_block_device():
        pytest.skip(f"no device node {node} for the root disk")
    return str(node), (disk / "dev").read_text().strip()

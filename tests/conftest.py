"""Shared fixtures, and the session-end check that nothing leaked.

Integration tests run as root against the real kernel, in a storage directory of
their own. When the session ends, the suite fails if a container directory, a name,
a mount, a set-up process, a cgroup or a network link made by the tests is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex32 import ContainerEngine
from codex32._linux import syscalls
from codex32.settings import Settings

IS_ROOT = os.geteuid() == 0

#: What this test session names its host objects after: its storage and scratch
#: directories, and the cgroup parent its engines use (``CODEX32_CGROUP_PARENT``,
#: inherited by the CLI runs). The leak checks look only at objects carrying it, so
#: two checkouts may run their suites on one machine at the same time.
SESSION_TAG = os.environ.setdefault("CODEX32_TEST_SESSION", f"codex32-test-{os.getpid()}")
os.environ["CODEX32_CGROUP_PARENT"] = SESSION_TAG


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``root`` skip, naming what is missing, when not run as root."""
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root: namespaces, mounts and cgroups (run as root)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def _codex32_mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if SESSION_TAG in line]


def _setup_processes() -> list[str]:
    """Monitors, fork servers and set-up processes of codex32 that are still alive.

    Exited ones waiting for init to reap them (zombies) do not count: a monitor
    daemonizes, so init reaps it, a moment after it exits.
    """
    out = subprocess.run(
        ["ps", "-eo", "pid=,stat=,comm=,args="], capture_output=True, text=True, check=True
    ).stdout
    marks = (
        "c32mon-",
        "codex32-forksrv",
        "codex32._runtime.monitor",
        "codex32._runtime.forkserver",
        "executor/_shim.py",
        "codex32.executor.supervisor",
    )  # bots' keepers, supervisors
    ours = os.path.dirname(sys.executable)  # not another checkout's runs on this machine
    return [
        line.strip()
        for line in out.splitlines()
        if any(m in line for m in marks) and ours in line and not line.split()[1].startswith("Z")
    ]


def _lingering(before: list[str], timeout: float = 5.0) -> list[str]:
    """New live codex32 processes, after giving exiting ones a moment to go."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in _setup_processes() if p not in before]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _cgroups() -> list[str]:
    """This session's cgroups: its engines' parents and everything beneath them, and
    containers beneath the default parent ``codex32`` (where an engine process that
    lost the session's settings would put them; compared with the session's start)."""
    found = []
    for top, dirs, _files in os.walk("/sys/fs/cgroup", onerror=lambda _e: None):
        # Directories may vanish while we walk (other cgroups being removed).
        found += [
            os.path.join(top, d)
            for d in dirs
            if SESSION_TAG in os.path.join(top, d) or os.path.basename(top) == "codex32"
        ]
    return found


def _links() -> list[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split(":")[1].strip() for line in out.splitlines() if "c32" in line]


@pytest.fixture(scope="session")
def storage_dir() -> Iterator[Path]:
    """A storage directory for the whole session, checked for leftovers at the end."""
    before = {
        "mounts": _codex32_mounts(),
        "processes": _setup_processes(),
        "cgroups": _cgroups(),
        "links": _links(),
    }
    base = os.environ.get("CODEX32_TEST_TMPDIR", "/tmp")  # the v2 VM sets a tmpfs here
    path = Path(tempfile.mkdtemp(prefix=f"{SESSION_TAG}-", dir=base))
    os.chmod(path, 0o711)  # a STRICT container's mapped root must reach its layers
    yield path
    leaks: list[str] = []
    containers = path / "containers"
    if containers.is_dir():
        leaks += [f"container directory {p}" for p in containers.iterdir()]
    names = path / "names"
    if names.is_dir():
        leaks += [f"container name {p.name}" for p in names.iterdir()]
    leaks += [f"mount {m.strip()}" for m in _codex32_mounts() if m not in before["mounts"]]
    leaks += [f"process {p}" for p in _lingering(before["processes"])]
    new_cgroups = [c for c in _cgroups() if c not in before["cgroups"]]
    # The engine's parent cgroup (as Docker's "docker") stays by design; a
    # container's cgroup left inside it is a leak. Tidy up the empty parents.
    leaks += [f"cgroup {c}" for c in new_cgroups if os.path.basename(c) != SESSION_TAG]
    for parent in new_cgroups:
        if os.path.basename(parent) == SESSION_TAG:
            with contextlib.suppress(OSError):
                os.rmdir(parent)
    leaks += [f"link {link}" for link in _links() if link not in before["links"]]
    shutil.rmtree(path, ignore_errors=True)
    if leaks:
        pytest.fail("the test session leaked:\n  " + "\n  ".join(leaks), pytrace=False)


@pytest.fixture(scope="session")
def engine(storage_dir: Path) -> Iterator[ContainerEngine]:
    """An engine on the session's storage directory (templates built once)."""
    if not IS_ROOT:
        pytest.skip("needs root: namespaces, mounts and cgroups (run as root)")
    settings = Settings.from_env(storage_dir)
    eng = ContainerEngine(settings=settings)
    yield eng
    eng.close()


# -- the integration session's own network namespace ---------------------------
#
# STANDARD containers join the default bridge network: starting one creates the
# bridge codex32-br0, a veth pair, tc qdiscs, a port proxy and, for masquerade
# networks, an nftables table, all in the network namespace the engine runs in. So
# that no test ever touches the machine's real network, the session first moves the
# pytest process (single-threaded at that point) into a fresh network namespace with
# only lo, up; the engine, its fork server, the containers' monitors and proxies all
# inherit it as their "host". At the end the process goes back, and the session
# fails if the real namespace gained a link meanwhile.


def host_links() -> set[str]:
    """Link names in the calling thread's network namespace."""
    return {name for _index, name in socket.if_nameindex()}


def _loopback_up() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@pytest.fixture(scope="session", autouse=True)
def isolated_host_network() -> Iterator[None]:
    """Run the whole integration session in a throw-away network namespace."""
    if not IS_ROOT:
        yield
        return
    real = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    before = host_links()
    try:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        _loopback_up()
        yield
    finally:
        syscalls.setns(real, syscalls.CLONE_NEWNET)
        os.close(real)
    added = host_links() - before
    if added:
        pytest.fail(f"the real network namespace gained links: {sorted(added)}", pytrace=False)

"""The sandbox pool: a pooled start gives exactly what a fresh one gives, once.

Every test runs a container through an engine with a pool and the same config
through the session's engine (no pool) and compares what the kernel says of the
two PID 1s from the host: the namespaces they do not share with the host, id maps,
capability sets, no_new_privs, seccomp, signal masks, descriptors, environment,
mounts, cgroup paths and the limit files. A hit is checked on the pool's counters,
so a test cannot pass by starting afresh. Sandboxes are never reused, a dead one is
replaced by a fresh start, a claim of another shape is refused, and closing the
engine leaves no sandbox process or cgroup.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BUSYBOX, NAMESPACES, assert_nothing_new, snapshot

from codex32 import ContainerConfig, ContainerEngine, IsolationType, ResourceLimits
from codex32._engine.container import Container
from codex32._runtime import protocol
from codex32._runtime.sandbox import Sandbox
from codex32.errors import ConfigError
from codex32.settings import Settings

pytestmark = pytest.mark.root

POOLED_LEVELS = (IsolationType.MINIMAL, IsolationType.STANDARD, IsolationType.STRICT)
STATUS_FIELDS = (
    "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
    "NoNewPrivs", "Seccomp", "Seccomp_filters", "SigBlk", "SigIgn", "SigCgt",
)  # fmt: skip
LIMIT_FILES = (
    "memory/memory.limit_in_bytes", "pids/pids.max", "cpu/cpu.cfs_quota_us",
    "cpu/cpu.shares", "devices/devices.list", "unified/memory.max", "unified/pids.max",
    "unified/cpu.max",
)  # fmt: skip


@pytest.fixture
def pooled(storage_dir: Path, engine: ContainerEngine) -> Iterator[ContainerEngine]:
    """An engine with a pool of 2 on the session's storage (``engine`` built the
    templates); closed after each test, so that no refill runs into another's checks."""
    eng = ContainerEngine(settings=Settings.from_env(storage_dir), sandbox_pool=2)
    yield eng
    eng.close()


def _config(isolation: IsolationType, **options: Any) -> ContainerConfig:
    return ContainerConfig(
        image=BUSYBOX,
        command=["sleep", "60"],
        isolation=isolation,
        resources=ResourceLimits(memory_bytes=64 << 20, pids_limit=100, cpus=0.5),
        **options,
    )


def _waiting(engine: ContainerEngine) -> set[int]:
    """The PID 1s of the sandboxes waiting in the engine's pool."""
    return {s.pid for queue in engine._pool._ready.values() for s in queue}


def _start_hit(engine: ContainerEngine, config: ContainerConfig) -> Container:
    """Start ``config`` detached in a sandbox the pool made (warmed up first): its PID 1
    is one that waited in the pool, and the pool counts a hit."""
    assert engine.warm_pool(config, wait=10), "the pool did not fill"
    waiting, hits = _waiting(engine), engine._pool.hits
    container = engine.containers.run_detached(config)
    try:
        assert container.record.pid in waiting, "the container's PID 1 did not wait in the pool"
        assert engine._pool.hits == hits + 1
    except BaseException:
        container.remove(force=True)  # a failed check leaves nothing behind either
        raise
    return container


def _view(container: Container) -> dict[str, object]:
    """What the host sees of the container's PID 1, with the container's id and
    per-object numbers (inodes, mount ids) written out."""
    container.reload()
    pid = container.record.pid
    assert pid is not None
    cid = container.id

    def clean(text: str) -> str:
        text = text.replace(cid, "ID").replace(cid[:12], "SHORT")
        return re.sub(r"(pipe|socket|anon_inode):\[\d+\]", r"\1:[N]", text)

    host = {name: os.readlink(f"/proc/self/ns/{name}") for name in NAMESPACES}
    own = sorted(n for n in NAMESPACES if os.readlink(f"/proc/{pid}/ns/{n}") != host[n])
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    fds = {fd: clean(os.readlink(f"/proc/{pid}/fd/{fd}")) for fd in os.listdir(f"/proc/{pid}/fd")}
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    environ = sorted(clean(item.decode()) for item in raw.split(b"\0") if item)
    with open(f"/proc/{pid}/mountinfo") as f:  # mount point, fs type, options
        mounts = sorted(
            clean(" ".join((fields[4], fields[5], fields[-3], fields[-1])))
            for fields in (line.split() for line in f)
        )
    limits = {}
    for controller, path in container.record.cgroup_paths.items():
        assert path.endswith("/" + cid), f"{controller} cgroup {path} is not the container's"
        for name in LIMIT_FILES:
            kind, filename = name.split("/")
            if kind == controller and os.path.exists(os.path.join(path, filename)):
                limits[name] = Path(path, filename).read_text()
    with open(f"/proc/{pid}/cgroup") as f:
        cgroups = sorted(clean(line) for line in f)
    return {
        "namespaces": own,
        "uid_map": Path(f"/proc/{pid}/uid_map").read_text(),
        "gid_map": Path(f"/proc/{pid}/gid_map").read_text(),
        "status": {k: status.get(k) for k in STATUS_FIELDS},
        "fds": fds,
        "environ": environ,
        "mounts": mounts,
        "cgroups": cgroups,
        "limits": limits,
        "cwd": os.readlink(f"/proc/{pid}/cwd"),
        "comm": Path(f"/proc/{pid}/comm").read_text(),
    }


@pytest.mark.parametrize("isolation", POOLED_LEVELS, ids=lambda level: level.value)
def test_a_pooled_container_is_what_a_fresh_start_makes(
    engine: ContainerEngine, pooled: ContainerEngine, isolation: IsolationType
) -> None:
    config = _config(isolation)
    fresh = engine.containers.run_detached(config)
    hit = _start_hit(pooled, config)
    try:
        fresh_view, pooled_view = _view(fresh), _view(hit)
        assert pooled_view["limits"], "no limit file was read"
        assert pooled_view == fresh_view
    finally:
        fresh.remove(force=True)
        hit.remove(force=True)


def test_a_sandbox_serves_one_container(pooled: ContainerEngine) -> None:
    """Two pooled containers (and the one before them) share no namespace."""
    config = _config(IsolationType.STRICT)
    first = _start_hit(pooled, config)
    hits = pooled._pool.hits
    second = pooled.containers.run_detached(config)
    try:
        assert pooled._pool.hits == hits + 1
        first.reload()
        second.reload()
        for name in ("pid", "mnt", "uts", "ipc", "net", "user"):
            assert os.readlink(f"/proc/{first.record.pid}/ns/{name}") != os.readlink(
                f"/proc/{second.record.pid}/ns/{name}"
            ), name
    finally:
        first.remove(force=True)
        second.remove(force=True)


def test_stdin_output_and_exit_code_go_through_a_sandbox(pooled: ContainerEngine) -> None:
    config = ContainerConfig(
        image=BUSYBOX, command=["sh", "-c", "read line; echo got $line; echo err >&2; exit 3"],
        auto_remove=True,
    )  # fmt: skip
    assert pooled.warm_pool(config, wait=10)
    hits = pooled._pool.hits
    read, write = os.pipe()
    os.write(write, b"hello\n")
    os.close(write)
    try:
        result = pooled.containers.run(config, stdin=read)
    finally:
        os.close(read)
    assert pooled._pool.hits == hits + 1
    assert (result.exit_code, result.output, result.error_output) == (3, b"got hello\n", b"err\n")


def test_a_terminal_through_a_sandbox(pooled: ContainerEngine) -> None:
    config = ContainerConfig(
        image=BUSYBOX, command=["sh", "-c", "tty; echo ok"], tty=True, auto_remove=True
    )
    assert pooled.warm_pool(config, wait=10)
    hits = pooled._pool.hits
    result = pooled.containers.run(config)
    assert pooled._pool.hits == hits + 1
    assert result.exit_code == 0
    assert result.output.replace(b"\r", b"").split() == [b"/dev/pts/0", b"ok"]


def test_a_dead_sandbox_is_replaced_by_a_fresh_start(pooled: ContainerEngine) -> None:
    config = ContainerConfig(image=BUSYBOX, command=["echo", "fresh"], auto_remove=True)
    assert pooled.warm_pool(config, wait=10)
    sandboxes = [s for queue in pooled._pool._ready.values() for s in queue]
    for sandbox in sandboxes:  # everything waiting dies
        os.kill(sandbox.pid, signal.SIGKILL)
    assert _eventually(lambda: not any(s.alive() for s in sandboxes))
    misses = pooled._pool.misses
    result = pooled.containers.run(config)
    assert (result.exit_code, result.output) == (0, b"fresh\n")
    assert pooled._pool.misses == misses + 1


def test_a_sandbox_that_cannot_take_the_start_falls_back(
    storage_dir: Path, engine: ContainerEngine
) -> None:
    """The claim is refused (a sandbox of another shape stands in the queue): the
    start goes on afresh, counted as a fallback, and the refused sandbox is gone."""
    config = ContainerConfig(image=BUSYBOX, command=["echo", "fresh"], auto_remove=True,
                             network="none")  # fmt: skip
    before = snapshot(storage_dir)
    eng = ContainerEngine(settings=Settings.from_env(storage_dir), sandbox_pool=1)
    try:
        assert eng.warm_pool(config, wait=10)
        queue = next(iter(eng._pool._ready.values()))
        assert eng._fork_server is not None
        other = '{"gid_mappings":[],"namespaces":["pid","mount"],"uid_mappings":[]}'
        stranger = Sandbox.make(eng._fork_server, other)
        assert stranger is not None
        queue.appendleft(stranger)
        fallbacks = eng._pool.fallbacks
        result = eng.containers.run(config)
        assert (result.exit_code, result.output) == (0, b"fresh\n")
        assert eng._pool.fallbacks == fallbacks + 1
        assert not _running(stranger.pid)
    finally:
        eng.close()
    assert_nothing_new(before, storage_dir)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _eventually(check: Any, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_claim_of_another_shape_is_refused(storage_dir: Path, engine: ContainerEngine) -> None:
    """The monitor checks the plan against the namespaces it made, and kills PID 1."""
    from codex32._runtime.launch import ForkServer

    server = ForkServer()
    try:
        shape = '{"gid_mappings":[],"namespaces":["pid","mount"],"uid_mappings":[]}'
        sandbox = Sandbox.make(server, shape)
        assert sandbox is not None
        plan = {"namespaces": ["pid", "mount", "net"], "uid_mappings": [], "gid_mappings": [],
                "container": "x", "steps": []}  # fmt: skip
        try:
            sock = sandbox.claim(plan, {"tty": False}, None, None, None)
            reply = protocol.receive(sock)
            assert reply is not None and reply["type"] == "error" and reply["step"] == "claim"
            assert "namespaces or id maps differ" in reply["message"]
            assert _eventually(lambda: not sandbox.alive())  # killed by its monitor
        finally:
            sandbox.discard()
    finally:
        server.close()


def test_closing_the_engine_ends_every_sandbox(storage_dir: Path, engine: ContainerEngine) -> None:
    before = snapshot(storage_dir)
    eng = ContainerEngine(settings=Settings.from_env(storage_dir), sandbox_pool=3)
    for isolation in POOLED_LEVELS:
        eng.containers.run(ContainerConfig(image=BUSYBOX, command=["true"], auto_remove=True,
                                           isolation=isolation))  # fmt: skip
    assert eng._pool.wait_ready(10)
    pids = [s.pid for queue in eng._pool._ready.values() for s in queue]
    assert len(pids) == 3 * len(POOLED_LEVELS)
    held = [s.cgroup for queue in eng._pool._ready.values() for s in queue if s.cgroup]
    eng.close()
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in pids if os.path.exists(f"/proc/{pid}")] == []
    for cgroup in held:
        assert not any(os.path.exists(path) for path in cgroup.paths.values())
    assert_nothing_new(before, storage_dir)


def test_the_pool_size_is_checked(storage_dir: Path) -> None:
    """Refused in one line where a pool is kept; the CLI, which keeps none, ignores it."""
    with pytest.raises(ConfigError, match="sandbox_pool=-1: a sandbox pool size is 0"):
        ContainerEngine(settings=Settings.from_env(storage_dir), sandbox_pool=-1)
    env = {**os.environ, "CODEX32_SANDBOX_POOL": "lots", "CODEX32_STORAGE_DIR": str(storage_dir)}
    library = subprocess.run(
        [sys.executable, "-c", "from codex32 import ContainerEngine; ContainerEngine()"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert library.returncode != 0
    assert "CODEX32_SANDBOX_POOL='lots' is not a whole number" in library.stderr
    cli = subprocess.run([str(Path(sys.executable).with_name("codex32")), "ps"], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert (cli.returncode, cli.stderr) == (0, "")

"""Real-enforcement checks shared by the v1 (host) and v2 (VM) cgroup tests.

Each check spawns its own workload with subprocess, holds it on a stdin line until
it is inside the cgroup (so nothing it does is charged elsewhere), then asserts on
what the kernel did. Every process is ours and is killed by pid or by the cgroup;
each check returns the figures it measured so the test can print them.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from codex32._cgroups.driver import Cgroup
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError

MEMORY_HOG = """
import sys
sys.stdin.readline()
chunks = []
while True:
    chunks.append(b"x" * (1 << 20))  # filled bytes: every page is touched and charged
"""

FORK_LOOP = """
import os, sys
sys.stdin.readline()
r, w = os.pipe()
forked, failure = 0, None
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as exc:
        failure = exc.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # wait for the parent to close the pipe
        os._exit(0)
    forked += 1
print(forked, failure, flush=True)
os.close(w)
for _ in range(forked):
    os.wait()
"""

BUSY_LOOP = """
import sys
sys.stdin.readline()
while True:
    pass
"""

COUNTER = """
import mmap, struct, sys
shared = mmap.mmap(int(sys.argv[1]), 8)
sys.stdin.readline()
i = 0
while True:
    i += 1
    struct.pack_into("Q", shared, 0, i)
"""

DOUBLE_FORK = """
import os, sys, time
sys.stdin.readline()
middle = os.fork()
if middle == 0:
    os.setsid()
    grandchild = os.fork()
    if grandchild == 0:
        os.closerange(0, 3)
        time.sleep(300)
        os._exit(0)
    print(grandchild, flush=True)
    os._exit(0)
os.waitpid(middle, 0)
"""

PR_SET_CHILD_SUBREAPER = 36


@contextmanager
def workload(
    group: Cgroup, code: str, *args: str, pass_fds: tuple[int, ...] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Start *code* held on stdin, move it into *group*, release it; kill it at the end."""
    with subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=pass_fds,
    ) as proc:
        try:
            group.add_pid(proc.pid)
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def check_oom(group: Cgroup) -> dict[str, int]:
    """A memory hog under 32 MiB (no swap) is OOM-killed and the kill is counted."""
    limit = 32 << 20
    group.apply(ResourceLimits(memory_bytes=limit, memory_swap_bytes=limit))
    with workload(group, MEMORY_HOG) as proc:
        code = proc.wait(timeout=30)
    stats = group.stats()
    assert code == -signal.SIGKILL, f"the hog exited with {code}, not SIGKILL"
    assert group.oom_killed()
    assert group.oom_kill_count() >= 1
    assert stats.oom_kills >= 1
    assert stats.memory_limit_bytes == limit
    if stats.memory_peak_bytes is not None:
        assert limit * 0.5 < stats.memory_peak_bytes <= limit
    figures = {"oom_kills": stats.oom_kills, "limit": limit}
    if stats.memory_peak_bytes is not None:
        figures["peak"] = stats.memory_peak_bytes
    if stats.memory_failcnt is not None:
        figures["failcnt"] = stats.memory_failcnt
    return figures


def check_pids(group: Cgroup) -> dict[str, int]:
    """pids.max=10 stops a fork loop: the 10th process fails with EAGAIN."""
    group.apply(ResourceLimits(pids_limit=10))
    with workload(group, FORK_LOOP) as proc:
        assert proc.stdout is not None
        forked_text, failure_text = proc.stdout.readline().decode().split()
        assert proc.wait(timeout=30) == 0
    forked, failure = int(forked_text), failure_text
    assert failure == str(errno.EAGAIN), f"fork failed with {failure}, not EAGAIN"
    assert forked == 9  # the loop itself is the 10th
    assert group.stats().pids_limit == 10
    return {"forked": forked, "errno": errno.EAGAIN}


def check_cpu(group: Cgroup) -> float:
    """cpus=0.5: a busy loop gets about half a core over 1.5 s (cpu usage counter)."""
    group.apply(ResourceLimits(cpus=0.5))
    with workload(group, BUSY_LOOP):
        time.sleep(0.3)  # past start-up and the first period
        used0, start = group.stats().cpu_usage_ns, time.monotonic()
        time.sleep(1.5)
        used1, end = group.stats().cpu_usage_ns, time.monotonic()
        group.kill_all()
    cores = (used1 - used0) / 1e9 / (end - start)
    assert 0.3 <= cores <= 0.7, f"busy loop used {cores:.2f} cores under cpus=0.5"
    return cores


def check_freeze(group: Cgroup) -> dict[str, int]:
    """A frozen counter does not advance; thawed, it does.

    The counter lives in a memfd both processes map: tmpfs-backed, so coherent
    whatever filesystem /tmp is (the VM's is 9p).
    """
    memfd = os.memfd_create("codex32-counter")
    os.ftruncate(memfd, 8)
    shared = mmap.mmap(memfd, 8)

    def read() -> int:
        # The counter is read while it is written: a read can be torn at a carry
        # (255 -> 256 may read as 0), so progress is judged on the highest of several.
        value: int = struct.unpack_from("Q", shared, 0)[0]
        return value

    def highest(seconds: float) -> int:
        end = time.monotonic() + seconds
        seen = read()
        while time.monotonic() < end:
            time.sleep(0.01)
            seen = max(seen, read())
        return seen

    try:
        with workload(group, COUNTER, str(memfd), pass_fds=(memfd,)) as proc:
            deadline = time.monotonic() + 30
            started = 0
            while started == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
                started = read()
            assert started > 0, f"the counter never started (exit status {proc.poll()})"
            group.freeze()
            assert group.is_frozen()
            frozen_at = read()
            time.sleep(0.5)
            still = read()
            group.thaw()
            assert not group.is_frozen()
            resumed = highest(0.3)
            group.kill_all()
    finally:
        shared.close()
        os.close(memfd)
    assert still == frozen_at, f"counter moved from {frozen_at} to {still} while frozen"
    assert resumed > still
    return {"frozen_at": frozen_at, "after_0.5s": still, "thawed_0.3s": resumed}


def check_kill_all(group: Cgroup) -> int:
    """kill_all kills a grandchild that double-forked away from the main process.

    We make ourselves a child subreaper for the duration, so the orphan is
    re-parented to us and we can reap it and see the SIGKILL.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    grandchild = 0
    try:
        with workload(group, DOUBLE_FORK) as proc:
            assert proc.stdout is not None
            grandchild = int(proc.stdout.readline())
            assert proc.wait(timeout=10) == 0
        assert group.pids() == [grandchild], "only the double-forked grandchild remains"
        group.kill_all()
        assert group.pids() == []
        _, status = os.waitpid(grandchild, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        return grandchild
    finally:
        if grandchild and group.pids():
            group.kill_all()
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def check_destroy(group: Cgroup) -> list[str]:
    """destroy refuses while a process lives, kill=True kills it and removes every dir."""
    paths = sorted(set(group.paths.values()))
    with workload(group, BUSY_LOOP) as proc:
        with pytest.raises(CgroupError, match="still has processes"):
            group.destroy()
        group.destroy(kill=True)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert not [p for p in paths if os.path.exists(p)]
    return paths


DEVICE_PROBE = """
import os, sys
sys.stdin.readline()
for spec in sys.argv[1:]:
    path, mode = spec.split(",")
    try:
        os.close(os.open(path, os.O_RDONLY if mode == "r" else os.O_WRONLY))
        print(spec, "ok")
    except OSError as exc:
        print(spec, exc.errno)
"""


def check_devices(group: Cgroup) -> dict[str, str]:
    """Docker's default rules deny /dev/kmsg (c 1:11) and allow /dev/null (the probe
    runs as root: only the policy refuses)."""
    from codex32._cgroups.devices import DEFAULT_RULES

    group.set_devices(DEFAULT_RULES)
    probes = ("/dev/null,w", "/dev/kmsg,r", "/dev/kmsg,w")
    with workload(group, DEVICE_PROBE, *probes) as proc:
        out, _ = proc.communicate(timeout=30)
    default = dict(line.split() for line in out.decode().splitlines())
    assert default == {
        "/dev/null,w": "ok", "/dev/kmsg,r": str(errno.EPERM), "/dev/kmsg,w": str(errno.EPERM)
    }, default  # fmt: skip
    return default


def check_device_granted(group: Cgroup) -> dict[str, str]:
    """``--device /dev/kmsg:/dev/kmsg:r``'s rule: read allowed, write still refused."""
    from codex32._cgroups.devices import DEFAULT_RULES, rule_for

    group.set_devices((*DEFAULT_RULES, rule_for("/dev/kmsg", "r")))
    with workload(group, DEVICE_PROBE, "/dev/kmsg,r", "/dev/kmsg,w") as proc:
        out, _ = proc.communicate(timeout=30)
    granted = dict(line.split() for line in out.decode().splitlines())
    assert granted == {"/dev/kmsg,r": "ok", "/dev/kmsg,w": str(errno.EPERM)}, granted
    return granted

"""The default seccomp profile on the real kernel, probed from a throw-away child.

The pytest process never loads a filter: a fresh interpreter sets no_new_privs,
loads the profile for an empty capability set (as root, so every refusal below comes
from seccomp and not from missing capabilities) and reports what the kernel says.
A control child runs the same probes without the filter, to show that each probe
tells the two apart.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from typing import Any

import pytest

CHILD = r"""
import ctypes, errno, json, os, socket, subprocess, sys, threading

load = sys.argv[1] == "load"
if load:
    from codex32._linux.caps import set_no_new_privs
    from codex32._linux.seccomp import compile_default_bpf
    from codex32._linux.bpf import load_bpf
    set_no_new_privs()
    load_bpf(compile_default_bpf(frozenset()))

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
CLONE_NEWNS = 0x00020000
SYS_CLONE3 = 435
AF_VSOCK = 40

def err(result):
    return ctypes.get_errno() if result == -1 else 0

def sock_err(family):
    try:
        socket.socket(family, socket.SOCK_STREAM).close()
        return 0
    except OSError as exc:
        return exc.errno

status = dict(
    line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line
)
thread_ran = []
thread = threading.Thread(target=lambda: thread_ran.append(True))
thread.start()
thread.join()
pid = os.fork()
if pid == 0:
    os._exit(7)
_, fork_status = os.waitpid(pid, 0)
with open(sys.executable, "rb") as exe:
    head = exe.read(4)
result = {
    "seccomp": status["Seccomp"].strip(),
    "no_new_privs": status["NoNewPrivs"].strip(),
    # A missing target: without the filter, root gets ENOENT and mounts nothing.
    "mount": err(libc.mount(b"none", b"/nonexistent-codex32-seccomp/x", b"tmpfs", 0, None)),
    "umount2": err(libc.umount2(b"/nonexistent-codex32-seccomp/x", 0)),
    "unshare_newns": err(libc.unshare(CLONE_NEWNS)),
    # clone3(NULL, 0): EINVAL from the kernel, ENOSYS from the profile.
    "clone3": err(libc.syscall(SYS_CLONE3, None, 0)),
    "socket_vsock": sock_err(AF_VSOCK),
    "socket_inet": sock_err(socket.AF_INET),
    "read_file": head == b"\x7fELF",
    "true_rc": subprocess.run(["/bin/true"]).returncode,
    "thread_ran": thread_ran == [True],
    "fork_exit": os.waitstatus_to_exitcode(fork_status),
}
print(json.dumps(result))
"""


def _host_seccomp_mode() -> str | None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return line.split(":", 1)[1].strip()
    return None


def _run_child(mode: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"child ({mode}) failed: {proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(autouse=True)
def _needs_root_and_seccomp() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: probes mount/unshare with every capability held")
    if _host_seccomp_mode() is None:
        pytest.skip("kernel without seccomp: /proc/self/status has no Seccomp line")


@pytest.mark.root
def test_default_filter_on_the_kernel() -> None:
    host_mode = _host_seccomp_mode()
    result = _run_child("load")
    assert _host_seccomp_mode() == host_mode  # the filter stayed in the child
    assert result["seccomp"] == "2"
    assert result["no_new_privs"] == "1"
    assert result["mount"] == errno.EPERM
    assert result["umount2"] == errno.EPERM
    assert result["unshare_newns"] == errno.EPERM
    assert result["clone3"] == errno.ENOSYS
    assert result["socket_vsock"] == errno.EPERM
    assert result["socket_inet"] == 0
    assert result["read_file"] is True
    assert result["true_rc"] == 0
    assert result["thread_ran"] is True
    assert result["fork_exit"] == 7


@pytest.mark.root
def test_probes_distinguish_the_filter_from_its_absence() -> None:
    if _host_seccomp_mode() != "0":
        pytest.skip("the host already runs this process under a seccomp filter")
    result = _run_child("control")
    assert result["seccomp"] == "0"
    assert result["mount"] == errno.ENOENT
    assert result["umount2"] in (errno.ENOENT, errno.EINVAL)
    assert result["unshare_newns"] == 0
    assert result["clone3"] == errno.EINVAL
    assert result["socket_vsock"] != errno.EPERM
    assert result["true_rc"] == 0

"""Escape attempts, run inside a container (the python template) as its command.

Each attack runs in a forked child (so that one that changes the container, such as a
``pivot_root``, cannot spoil the next) and reports ``contained`` or what it got.
Every attempt is harmless if it succeeds: it writes back values it read, mounts on
scratch paths, names no device it writes to, and only asks the kernel for things.
Prints one JSON object: attack -> {"contained": bool, "detail": str}.

argv: HOST_PID PORT [BLOCK_MAJ:MIN]
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import sys
from typing import Any

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
HOST_PID, PORT = int(sys.argv[1]), int(sys.argv[2])
BLOCK = sys.argv[3] if len(sys.argv) > 3 else ""


def sys_call(number: int, *args: Any) -> tuple[int, int]:
    result = libc.syscall(number, *args)
    return result, (ctypes.get_errno() if result == -1 else 0)


def refused(number: int, *args: Any) -> tuple[bool, str]:
    """A syscall that must fail: (contained, detail)."""
    result, err = sys_call(number, *args)
    if result == -1:
        return True, errno.errorcode.get(err, str(err))
    return False, f"returned {result}"


def refused_unless(allowed_errnos: set[int], number: int, *args: Any) -> tuple[bool, str]:
    """Contained when the call fails with one of ``allowed_errnos`` (refused before it
    did anything); another errno means the kernel went further than permission."""
    result, err = sys_call(number, *args)
    name = errno.errorcode.get(err, str(err))
    if result == -1:
        return err in allowed_errnos, name
    return False, f"returned {result}"


DENIED = {errno.EPERM, errno.EACCES, errno.ENOSYS}


def opens(path: str, flags: int, read: int = 0) -> tuple[bool, str]:
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        return True, str(exc.strerror)
    try:
        data = os.read(fd, read) if read else b""
    except OSError as exc:
        return True, f"opened, read failed: {exc.strerror}"
    finally:
        os.close(fd)
    if read and not data:
        return True, "opened, reads empty (masked)"
    return False, f"opened and read {len(data)} bytes" if read else "opened"


def write_back(path: str) -> tuple[bool, str]:
    """Write a file's own value back: harmless, and tells whether writes are allowed."""
    try:
        with open(path) as f:
            value = f.read()
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        return True, str(exc.strerror)
    return False, "written"


def a_mount() -> tuple[bool, str]:
    os.makedirs("/tmp/c32m", exist_ok=True)
    return refused(165, b"none", b"/tmp/c32m", b"tmpfs", 0, None)


def a_umount() -> tuple[bool, str]:
    return refused(166, b"/proc", 2)  # MNT_DETACH


def a_pivot_root() -> tuple[bool, str]:
    return refused(155, b"/tmp", b"/tmp")


def a_unshare_mnt() -> tuple[bool, str]:
    return refused(272, 0x00020000)


def a_unshare_user() -> tuple[bool, str]:
    return refused(272, 0x10000000)


def a_setns() -> tuple[bool, str]:
    fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    return refused(308, fd, 0)


def a_kcore() -> tuple[bool, str]:
    return opens("/proc/kcore", os.O_RDONLY, 16)


def a_sysrq() -> tuple[bool, str]:
    try:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("h")  # help: prints to the kernel log, changes nothing
    except OSError as exc:
        return True, str(exc.strerror)
    return False, "wrote to /proc/sysrq-trigger"


def a_proc_sys() -> tuple[bool, str]:
    return write_back("/proc/sys/vm/overcommit_ratio")


def a_core_pattern() -> tuple[bool, str]:
    return write_back("/proc/sys/kernel/core_pattern")


def a_sys_write() -> tuple[bool, str]:
    return write_back("/sys/kernel/uevent_helper")


def a_self_exe() -> tuple[bool, str]:
    ok, detail = opens("/proc/self/exe", os.O_WRONLY | os.O_APPEND)
    if not ok:
        return ok, detail
    fd = os.open("/proc/self/exe", os.O_PATH)
    return opens(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_APPEND)


def a_release_agent() -> tuple[bool, str]:
    os.makedirs("/tmp/c32cg", exist_ok=True)
    ok, detail = refused(165, b"cgroup", b"/tmp/c32cg", b"cgroup", 0, b"memory")
    if not ok:
        return ok, f"mounted a cgroup v1 hierarchy: {detail}"
    for top, _dirs, files in os.walk("/sys/fs/cgroup"):
        if "release_agent" in files:
            ok, detail = write_back(os.path.join(top, "release_agent"))
            if not ok:
                return False, f"{top}/release_agent writable"
    return True, detail


#: Where a device node might be made: tmpfs /tmp, /dev, the overlay root, the home.
NODE_DIRS = ("/tmp", "/dev", "/", "/home/bot", "/var/tmp")


def _node(kind: int, major: int, minor: int, read: int) -> tuple[bool, str]:
    """Make the node in every writable place and open it: contained if none opens."""
    details: list[str] = []
    for directory in NODE_DIRS:
        path = os.path.join(directory, f"c32node{major}-{minor}")
        try:
            os.mknod(path, 0o600 | kind, os.makedev(major, minor))
        except OSError as exc:
            details.append(f"{directory}: mknod {exc.strerror}")
            continue
        ok, detail = opens(path, os.O_RDONLY, read)
        os.unlink(path)
        if not ok:
            return False, f"{path}: {detail}"
        details.append(f"{directory}: {detail}")
    return True, "; ".join(details)


def a_mknod_kmsg() -> tuple[bool, str]:
    return _node(0o020000, 1, 11, 0)  # /dev/kmsg: the host kernel log


def a_mknod_block() -> tuple[bool, str]:
    if not BLOCK:
        return True, "no block device given"
    major, minor = (int(x) for x in BLOCK.split(":"))
    return _node(0o060000, major, minor, 512)


def a_dev_mem() -> tuple[bool, str]:
    return opens("/dev/mem", os.O_RDONLY)


def a_dev_kmsg() -> tuple[bool, str]:
    return opens("/dev/kmsg", os.O_RDONLY)


def a_modules() -> tuple[bool, str]:
    return refused_unless(DENIED, 313, -1, b"", 0)  # finit_module: EBADF = it got through


def a_kexec() -> tuple[bool, str]:
    return refused_unless(DENIED, 246, 0, 0, None, 0)


def a_bpf() -> tuple[bool, str]:
    attr = struct.pack("IIII", 2, 4, 4, 1) + b"\0" * 112  # BPF_MAP_TYPE_ARRAY
    buf = ctypes.create_string_buffer(attr)
    return refused(321, 0, buf, len(attr))


def a_perf_event_open() -> tuple[bool, str]:
    attr = struct.pack("IIQ", 1, 128, 0) + b"\0" * 112  # software, cpu-clock
    buf = ctypes.create_string_buffer(attr)
    return refused(298, buf, 0, -1, -1, 0)


def a_userfaultfd() -> tuple[bool, str]:
    return refused(323, 0)


def a_io_uring() -> tuple[bool, str]:
    params = ctypes.create_string_buffer(120)
    return refused(425, 1, params)


def a_keyctl() -> tuple[bool, str]:
    return refused(248, b"user", b"c32probe", b"v", 1, ctypes.c_int(-2))


def a_ptrace_outside() -> tuple[bool, str]:
    try:
        os.kill(HOST_PID, 0)
    except ProcessLookupError:
        pass
    else:
        return False, "a host process is visible"
    return refused(101, 16, HOST_PID, None, None)  # PTRACE_ATTACH


def a_clock() -> tuple[bool, str]:
    now = (ctypes.c_long * 2)()
    libc.clock_gettime(0, now)
    return refused(227, 0, now)  # clock_settime(CLOCK_REALTIME, now)


def a_hostname() -> tuple[bool, str]:
    name = b"c32-escaped"
    result, err = sys_call(170, name, len(name))
    return True, ("set in its own uts namespace" if result == 0 else errno.errorcode[err])


def a_syslog() -> tuple[bool, str]:
    buf = ctypes.create_string_buffer(4096)
    result, err = sys_call(103, 3, buf, 4096)  # SYSLOG_ACTION_READ_ALL
    if result > 0:
        return False, f"read {result} bytes of the kernel log"
    return True, errno.errorcode.get(err, "empty")


def a_open_by_handle() -> tuple[bool, str]:
    return refused_unless(DENIED, 304, os.open("/", os.O_RDONLY), b"\0" * 16, 0)


def a_swapon() -> tuple[bool, str]:
    return refused_unless(DENIED, 167, b"/tmp/none", 0)


def a_raw_socket() -> tuple[bool, str]:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
    except OSError as exc:
        return True, str(exc.strerror)
    return True, "raw socket in netns " + os.readlink("/proc/self/ns/net")


def _connects(address: str) -> tuple[bool, str]:
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect((address, PORT))
        except OSError as exc:
            return True, f"{address}: {exc.strerror or exc}"
    return False, f"connected to {address}:{PORT}"


def a_host_loopback() -> tuple[bool, str]:
    return _connects("127.0.0.1")


def a_host_gateway() -> tuple[bool, str]:
    try:
        with open("/proc/net/route") as f:
            rows = [line.split() for line in f.read().splitlines()[1:]]
    except OSError as exc:
        return True, str(exc.strerror)
    gateways = [
        socket.inet_ntoa(struct.pack("<I", int(r[2], 16)))
        for r in rows
        if r[1] == "00000000" and r[2] != "00000000"
    ]
    for gateway in gateways:
        ok, detail = _connects(gateway)
        if not ok:
            return ok, detail
    return True, f"gateways tried: {gateways}"


def a_leaked_descriptors() -> tuple[bool, str]:
    """Descriptors PID 1 got from the engine besides stdio (read before the probes)."""
    extra = {fd: target for fd, target in FDS_AT_START.items() if fd > 2}
    if extra:
        return False, "open: " + ", ".join(f"{fd}->{target}" for fd, target in extra.items())
    return True, "0, 1, 2 only"


def _descriptors() -> dict[int, str]:
    found: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if not (target.startswith("/proc/") and target.endswith("/fd")):  # the listing's own
            found[int(name)] = target
    return found


FDS_AT_START = _descriptors()


def main() -> None:
    results: dict[str, Any] = {}
    for name, attack in sorted(globals().items()):
        if not name.startswith("a_"):
            continue
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                ok, detail = attack()
            except Exception as exc:  # a probe that could not run is not a pass
                ok, detail = False, f"probe error {type(exc).__name__}: {exc}"
            os.write(write, json.dumps({"contained": bool(ok), "detail": str(detail)}).encode())
            os._exit(0)
        os.close(write)
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
        os.close(read)
        os.waitpid(pid, 0)
        results[name[2:]] = (
            json.loads(data) if data else {"contained": False, "detail": "probe died"}
        )
    print(json.dumps(results))


main()

"""Install a compiled seccomp filter with seccomp(2): no libseccomp in the container.

The engine compiles the profile once (``seccomp.compile_default_bpf``) and caches the
bytes; the set-up process only hands them to the kernel, the last step before exec.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct

_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}
_SECCOMP_SET_MODE_FILTER = 1
_libc = ctypes.CDLL(None, use_errno=True)


def load_bpf(program: bytes) -> None:
    """Install a compiled filter on the calling thread with seccomp(2).

    no_new_privs must be set already (or CAP_SYS_ADMIN held): the kernel says EACCES.
    """
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, "seccomp: the compiled filter is empty or truncated")

    class _SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    number = _SYS_SECCOMP[os.uname().machine]
    if _libc.syscall(ctypes.c_long(number), _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog)) != 0:
        err = ctypes.get_errno()
        hint = " (set no_new_privs first)" if err == errno.EACCES else ""
        raise OSError(err, f"seccomp: cannot load the default filter: {os.strerror(err)}{hint}")


# -- cgroup v2 device programs (the engine side; the set-up process never loads one) --

_SYS_BPF = {"x86_64": 321, "aarch64": 280}
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
#: Every program on the path from the root runs and all must allow (runc attaches so).
_BPF_F_ALLOW_MULTI = 2
_LOG_SIZE = 1 << 16


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    number = _SYS_BPF[os.uname().machine]
    result = int(_libc.syscall(ctypes.c_long(number), command, attr, len(attr)))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def load_device_program(instructions: bytes) -> int:
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program; its descriptor (close-on-exec).

    On a verifier refusal the load is repeated with a log, which the error carries.
    """
    code = ctypes.create_string_buffer(instructions, len(instructions))
    license_ = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(_LOG_SIZE)

    def attr(with_log: bool) -> ctypes.Array[ctypes.c_char]:
        buffer = ctypes.create_string_buffer(128)  # union bpf_attr, zeroed past our fields
        struct_fields = struct.pack(
            "=IIQQIIQ",
            _BPF_PROG_TYPE_CGROUP_DEVICE,
            len(instructions) // 8,
            ctypes.addressof(code),
            ctypes.addressof(license_),
            1 if with_log else 0,
            _LOG_SIZE if with_log else 0,
            ctypes.addressof(log) if with_log else 0,
        )
        ctypes.memmove(buffer, struct_fields, len(struct_fields))
        return buffer

    try:
        return _bpf(_BPF_PROG_LOAD, attr(False))
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EACCES):
            raise OSError(
                exc.errno, f"bpf: cannot load the device program: {exc.strerror}"
            ) from None
        with contextlib.suppress(OSError):
            os.close(_bpf(_BPF_PROG_LOAD, attr(True)))
        text = log.value.decode(errors="replace").strip().splitlines()
        raise OSError(
            exc.errno, f"bpf: the verifier refused the device program: {text[-3:]}"
        ) from None


def attach_device_program(cgroup_dir: str, program_fd: int) -> None:
    """Attach a loaded device program to the cgroup directory (it stays until the
    cgroup is removed; the descriptor may be closed after)."""
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = ctypes.create_string_buffer(
            struct.pack("=IIII", fd, program_fd, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI), 32
        )
        _bpf(_BPF_PROG_ATTACH, attr)
    finally:
        os.close(fd)

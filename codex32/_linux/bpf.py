"""Install a compiled seccomp filter with seccomp(2): no libseccomp in the container.

The engine compiles the profile once (``seccomp.compile_default_bpf``) and caches the
bytes; the set-up process only hands them to the kernel, the last step before exec.
"""

from __future__ import annotations

import ctypes
import errno
import os

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

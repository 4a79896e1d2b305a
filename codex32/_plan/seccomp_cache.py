"""Compiled seccomp programs, cached on disk per (profile, capabilities, kernel).

Compiling needs libseccomp (pyseccomp costs ~30 ms to import); a cached program
costs one small read. The container's set-up process loads the bytes with
seccomp(2) and never imports libseccomp.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from codex32._linux.seccomp import PROFILE_PATH, compile_default_bpf

#: (profile's stat, capabilities) -> the cache key: every create asks, and hashing the
#: profile (~30 KB read) each time was a file read and a SHA-256 per create.
_keys: dict[tuple[tuple[int, int, int], frozenset[str]], str] = {}


def _key(capabilities: frozenset[str]) -> str:
    st = os.stat(PROFILE_PATH)
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    known = _keys.get((stamp, capabilities))
    if known is not None:
        return known
    uname = os.uname()
    key = hashlib.sha256()
    key.update(Path(PROFILE_PATH).read_bytes())
    key.update(",".join(sorted(capabilities)).encode())
    key.update(f"{uname.machine} {uname.release}".encode())
    if len(_keys) >= 64:  # a few capability sets in practice
        _keys.clear()
    _keys[(stamp, capabilities)] = digest = key.hexdigest()[:20]
    return digest


def default_program(storage_dir: Path, capabilities: frozenset[str]) -> Path:
    """The path of the compiled default profile for ``capabilities`` (built if missing)."""
    directory = storage_dir / "seccomp"
    path = directory / f"default-{_key(capabilities)}.bpf"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    program = compile_default_bpf(capabilities)
    # Per thread, not only per process: the service compiles from several threads.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_native_id()}")
    tmp.write_bytes(program)
    os.replace(tmp, path)
    return path

"""The process-level steps of a container's set-up: user, limits, loopback, exec.

Run after pivot_root, so /etc/passwd and $PATH are the container's.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import socket
import struct
from dataclasses import dataclass

from codex32._linux import syscalls

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_ID_MAX = 2**32 - 2


class UserLookupError(LookupError):
    """A user or group name the container's /etc files do not know."""


@dataclass(frozen=True)
class Identity:
    """Who the container's process runs as."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and ":" in line]
    except FileNotFoundError:
        return []


def resolve_user(spec: str) -> Identity:
    """``user[:group]`` by name or number, from the container's /etc/passwd and group."""
    user, _, group = spec.partition(":")
    passwd = [e for e in _read_db("/etc/passwd") if len(e) >= 7]
    groups = [e for e in _read_db("/etc/group") if len(e) >= 4]
    entry = next((e for e in passwd if e[0] == user or (user.isdigit() and e[2] == user)), None)
    if entry is None and not user.isdigit():
        raise UserLookupError(f"unable to find user {user}: no matching entries in passwd file")
    uid = int(user) if user.isdigit() else int(entry[2])  # type: ignore[index]
    gid = int(entry[3]) if entry else 0
    home = entry[5] if entry else "/"
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            match = next((g for g in groups if g[0] == group), None)
            if match is None:
                raise UserLookupError(
                    f"unable to find group {group}: no matching entries in group file"
                )
            gid = int(match[2])
    for what, number in (("uid", uid), ("gid", gid)):
        if not 0 <= number <= _ID_MAX:  # (uid_t)-1 would leave the set-up's root in place
            raise UserLookupError(f"{what} {number} is out of range 0..{_ID_MAX}")
    name = entry[0] if entry else None
    extra = tuple(
        int(g[2]) for g in groups if name and name in g[3].split(",") and int(g[2]) != gid
    )
    return Identity(uid=uid, gid=gid, groups=(gid, *extra), home=home)


def switch_user(identity: Identity) -> None:
    """setgroups, then gid, then uid (the order that keeps the right to do each)."""
    os.setgroups(list(identity.groups))
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)


def set_rlimits(limits: list[list[int]]) -> None:
    """setrlimit for each ``[resource, soft, hard]`` (-1 = unlimited)."""
    for res, soft, hard in limits:
        inf = resource.RLIM_INFINITY
        resource.setrlimit(res, (inf if soft == -1 else soft, inf if hard == -1 else hard))


def reset_signals() -> None:
    """Every signal to its default action and an empty mask, right before exec (runc's).

    execve keeps ignored signals ignored and the mask as is: without this the
    container would inherit Python's SIG_IGN for SIGPIPE and SIGXFSZ (and the
    launcher's ignored SIGINT), so ``yes | head`` spins and a write past
    ``--ulimit fsize`` gets EFBIG instead of a kill.
    """
    for number in range(1, signal.NSIG):  # valid_signals() leaves out glibc's own
        if number in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError):  # glibc's own real-time signals (32, 33)
            syscalls.default_signal_action(number)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def loopback_up() -> None:
    """Bring ``lo`` up in the container's new network namespace.

    One ioctl in the set-up process, as crun does: importing a netlink library into
    the set-up process would cost more start-up time than the whole step.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def find_executable(command: str, path: str) -> str:
    """Look ``command`` up as execvp would, raising the errno Docker maps to 126/127."""
    if "/" in command:
        candidates = [command]
    else:
        candidates = [os.path.join(d or ".", command) for d in path.split(":")]
    denied = None
    for candidate in candidates:
        if os.path.isdir(candidate):
            denied = denied or candidate
            continue
        if os.path.exists(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = denied or candidate
    if denied is not None:
        raise PermissionError(errno.EACCES, f'exec: "{command}": permission denied', denied)
    where = "" if "/" in command else " in $PATH"
    raise FileNotFoundError(
        errno.ENOENT, f'exec: "{command}": executable file not found{where}', command
    )


# -- pids the kernel vouches for ---------------------------------------------------
#
# A pid read from a message could be any process's; these read what the kernel says
# of a process instead (issue 11: the engine once put a pid a container sent it in
# the container's cgroup). Linux >= 5.3 for pidfds.


def pid_of_pidfd(pidfd: int) -> int:
    """The pid (in our pid namespace) of the process ``pidfd`` refers to.

    The kernel writes it in the descriptor's fdinfo (``Pid:``); -1 once the process
    is gone, 0 if it is outside our pid namespace: both are refused.
    """
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        for line in f:
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                if pid <= 0:
                    raise ProcessLookupError(errno.ESRCH, "the process is gone or out of reach")
                return pid
    raise ValueError(f"descriptor {pidfd} is not a pidfd")


def _status_field(pid: int, name: str) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == name:
                return value.split()
    return []


def parent_pid(pid: int) -> int:
    """``pid``'s parent, as the kernel says."""
    return int(_status_field(pid, "PPid")[0])


def pid_namespace(pid: int) -> int:
    """The inode of ``pid``'s pid namespace (equal inodes: the same namespace)."""
    return os.stat(f"/proc/{pid}/ns/pid").st_ino


def is_namespace_init(pid: int) -> bool:
    """``pid`` is PID 1 of a pid namespace of its own (a container's first process);
    False if it is gone."""
    try:
        nspid = _status_field(pid, "NSpid")
    except OSError:
        return False
    return len(nspid) > 1 and nspid[-1] == "1"


def in_pid_namespace_of(pid: int, init: int) -> bool:
    """``pid`` lives in the pid namespace whose PID 1 is ``init`` (a container's)."""
    return is_namespace_init(init) and pid_namespace(pid) == pid_namespace(init)


def in_cgroup_named(pid: int, name: str) -> bool:
    """``pid`` is in a cgroup whose directory is ``name`` (a container's id), in some
    hierarchy, as ``/proc/PID/cgroup`` shows it from here; False if it is gone."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return any(line.rstrip("\n").rsplit("/", 1)[-1] == name for line in f)
    except OSError:
        return False

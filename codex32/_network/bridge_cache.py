"""Remember bridges already checked, so a start skips the netlink round trips.

``ensure_bridge`` (pyroute2) looks the bridge up, checks its kind and addresses and
sets it up: ~7 ms per container start on these machines, for a bridge that is almost
always as the previous start left it. After one full check, the next starts in the
same network namespace only confirm, with three ioctls (~30 us), that the same device
(its ifindex) still has that name, is up and carries the gateway address; anything
else falls back to the full check. Docker likewise checks a bridge when the network
is set up, not at every container start.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import threading

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B
_IFF_UP = 0x1

_lock = threading.Lock()
#: (network namespace inode, bridge name, gateway address) -> ifindex when checked.
_checked: dict[tuple[int, str, str], int] = {}


def _netns() -> int:
    """The calling thread's network namespace (threads may sit in different ones)."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("16s24x", name.encode()))


def _still_as_checked(name: str, gateway_ip: str, index: int) -> bool:
    try:
        if socket.if_nametoindex(name) != index:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            (flags,) = struct.unpack_from("H", _ifreq(sock, _SIOCGIFFLAGS, name), 16)
            address = socket.inet_ntoa(_ifreq(sock, _SIOCGIFADDR, name)[20:24])
    except OSError:
        return False
    return bool(flags & _IFF_UP) and address == gateway_ip


def is_ready(name: str, gateway_ip: str) -> bool:
    """Whether the bridge was checked in this namespace and is still as it was then."""
    key = (_netns(), name, gateway_ip)
    with _lock:
        index = _checked.get(key)
    if index is None:
        return False
    if _still_as_checked(name, gateway_ip, index):
        return True
    forget(name)
    return False


def verify(name: str, gateway_cidr: str) -> bool:
    """Whether the bridge is already as ``ensure_bridge`` would leave it; remember it if so.

    For a process that has not checked it yet (every CLI ``run``): one netlink request
    (its kind and flags, :mod:`codex32._linux.rtnl`) and two ioctls (its primary address
    and netmask) instead of importing pyroute2. False when anything differs (the gateway
    as a secondary address included): the caller then runs the full ``ensure_bridge``.
    """
    from codex32._linux.rtnl import Rtnl

    gateway_ip, _, prefix = gateway_cidr.partition("/")
    try:
        with Rtnl() as rtnl:
            found = rtnl.link(name)
        if found is None or found[2] != "bridge" or not found[1] & _IFF_UP:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            address = socket.inet_ntoa(_ifreq(sock, _SIOCGIFADDR, name)[20:24])
            netmask = socket.inet_ntoa(_ifreq(sock, _SIOCGIFNETMASK, name)[20:24])
    except OSError:
        return False
    if address != gateway_ip or str(_prefixlen(netmask)) != prefix:
        return False
    with _lock:
        _checked[(_netns(), name, gateway_ip)] = found[0]
    return True


def _prefixlen(netmask: str) -> int:
    return bin(int.from_bytes(socket.inet_aton(netmask), "big")).count("1")


def remember(name: str, gateway_ip: str) -> None:
    """Record a bridge that ``ensure_bridge`` has just checked or made."""
    with contextlib.suppress(OSError):
        index = socket.if_nametoindex(name)
        with _lock:
            _checked[(_netns(), name, gateway_ip)] = index


def forget(name: str) -> None:
    """Drop what is known of a bridge (it was removed, or changed under us)."""
    with _lock:
        for key in [k for k in _checked if k[1] == name]:
            del _checked[key]

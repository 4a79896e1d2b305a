"""The few rtnetlink requests of a container start, over a plain socket (stdlib only).

A bridged start needs five: create a veth pair with its peer inside the container's
namespace, put the host end on the bridge and up, then in the container bring ``lo`` and
``eth0`` up, address ``eth0`` and add the default route. pyroute2 (the rest of
:mod:`codex32._linux.netlink`: bridges, traffic control, clean-up) costs ~110-170 ms to
import, since its package ``__init__`` loads all of it (IPDB, NDB, asyncio, conntrack),
more than the whole start; every CLI ``run`` on a bridge paid it. These requests are
fixed-layout messages (``ip link add ... type veth peer ... netns``), so they are
written here with :mod:`struct`, as crun and runc write theirs in C and Go.

Every failure raises :class:`~codex32.errors.NetworkError` naming the link, the step and
the errno, after removing what the call created.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno as errno_module
import hashlib
import ipaddress
import os
import re
import socket
import struct
import threading
from collections.abc import Iterator

from codex32.errors import NetworkError

IFNAMSIZ_MAX = 15
CONTAINER_IFNAME = "eth0"
HOST_IFNAME_PREFIX = "c32"
IFB_IFNAME_PREFIX = "i32"
_HEX_ID_RE = re.compile(r"^[0-9a-f]{12,}$")

_CLONE_NEWNET = 0x40000000
_IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")

# linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h
_NLMSG_ERROR = 2
_NLMSG_DONE = 3
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_RTM_NEWLINK = 16
_RTM_DELLINK = 17
_RTM_GETLINK = 18
_RTM_NEWADDR = 20
_RTM_NEWROUTE = 24
_IFLA_IFNAME = 3
_IFLA_MTU = 4
_IFLA_MASTER = 10
_IFLA_LINKINFO = 18
_IFLA_NET_NS_FD = 28
_IFLA_INFO_KIND = 1
_IFLA_INFO_DATA = 2
_VETH_INFO_PEER = 1
_NLA_F_NESTED = 0x8000
_IFA_ADDRESS = 1
_IFA_LOCAL = 2
_RTA_GATEWAY = 5
_RTA_OIF = 4
_RT_TABLE_MAIN = 254
_RTPROT_STATIC = 4  # as pyroute2's route add
_RT_SCOPE_UNIVERSE = 0
_RTN_UNICAST = 1
_IFF_UP = 0x1

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg

_libc = ctypes.CDLL(None, use_errno=True)


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _name(value: str) -> bytes:
    return value.encode() + b"\0"


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & ~_NLA_F_NESTED, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3


class Rtnl:
    """One NETLINK_ROUTE socket (the caller's namespace, or one handed over by fd)."""

    def __init__(self, fileno: int | None = None) -> None:
        if fileno is None:
            self._sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )
        else:
            self._sock = socket.socket(fileno=fileno)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        """Send one request with an ack; its replies (type, payload) until the ack.

        A negative ack raises ``OSError`` with the kernel's errno.
        """
        self._seq += 1
        seq = self._seq
        flags |= _NLM_F_REQUEST | _NLM_F_ACK
        self._sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, rtype, _flags, rseq, _pid = _HEADER.unpack_from(data, offset)
                payload = data[offset + _HEADER.size : offset + length]
                offset += (length + 3) & ~3
                if rseq != seq:
                    continue
                if rtype == _NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                if rtype == _NLMSG_DONE:
                    return replies
                replies.append((rtype, payload))

    def link(self, name: str) -> tuple[int, int, str | None] | None:
        """(index, flags, kind) of the link called ``name``; None if there is none."""
        try:
            replies = self.request(_RTM_GETLINK, 0, _ifinfo() + _attr(_IFLA_IFNAME, _name(name)))
        except OSError as exc:
            if exc.errno in (errno_module.ENODEV, errno_module.ENOENT):
                return None
            raise
        for rtype, payload in replies:
            if rtype != _RTM_NEWLINK:
                continue
            _family, _type, index, flags, _change = _IFINFO.unpack_from(payload)
            kind = None
            for attr, value in _attrs(payload[_IFINFO.size :]):
                if attr == _IFLA_LINKINFO:
                    for sub, data in _attrs(value):
                        if sub == _IFLA_INFO_KIND:
                            kind = data.rstrip(b"\0").decode()
            return index, flags, kind
        return None

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int) -> None:
        """``ip link add NAME mtu M type veth peer name PEER netns FD mtu M``."""
        peer_info = (
            _ifinfo()
            + _attr(_IFLA_IFNAME, _name(peer))
            + _attr(_IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
            + _attr(_IFLA_MTU, struct.pack("=I", mtu))
        )
        linkinfo = _attr(_IFLA_INFO_KIND, _name("veth")) + _attr(
            _IFLA_INFO_DATA | _NLA_F_NESTED, _attr(_VETH_INFO_PEER | _NLA_F_NESTED, peer_info)
        )
        body = (
            _ifinfo()
            + _attr(_IFLA_IFNAME, _name(name))
            + _attr(_IFLA_MTU, struct.pack("=I", mtu))
            + _attr(_IFLA_LINKINFO | _NLA_F_NESTED, linkinfo)
        )
        self.request(_RTM_NEWLINK, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def set_up(self, index: int, master: int | None = None) -> None:
        """Bring a link up (and enslave it to ``master``)."""
        body = _ifinfo(index, _IFF_UP, _IFF_UP)
        if master is not None:
            body += _attr(_IFLA_MASTER, struct.pack("=I", master))
        self.request(_RTM_NEWLINK, 0, body)

    def delete(self, index: int) -> None:
        self.request(_RTM_DELLINK, 0, _ifinfo(index))

    def add_address(self, index: int, address: ipaddress.IPv4Interface) -> None:
        packed = address.ip.packed
        body = _IFADDR.pack(socket.AF_INET, address.network.prefixlen, 0, 0, index)
        body += _attr(_IFA_LOCAL, packed) + _attr(_IFA_ADDRESS, packed)
        self.request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body)

    def add_default_route(self, gateway: ipaddress.IPv4Address, oif: int) -> None:
        body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, _RT_TABLE_MAIN, _RTPROT_STATIC,
                           _RT_SCOPE_UNIVERSE, _RTN_UNICAST, 0)  # fmt: skip
        body += _attr(_RTA_GATEWAY, gateway.packed) + _attr(_RTA_OIF, struct.pack("=I", oif))
        self.request(_RTM_NEWROUTE, _NLM_F_CREATE | _NLM_F_EXCL, body)


# --- names ---------------------------------------------------------------------------


def host_ifname(container_id: str) -> str:
    """Name of the host-side veth: ``c32`` + 12 hex chars, stable for a container id.

    A hex id (as the engine makes) is used as is so ``ip link`` shows which container a
    veth belongs to; anything else is hashed so the name stays within IFNAMSIZ.
    """
    if not container_id:
        raise NetworkError("empty container id", step="network.ifname")
    lowered = container_id.lower()
    suffix = (
        lowered[:12]
        if _HEX_ID_RE.match(lowered)
        else hashlib.sha256(container_id.encode()).hexdigest()[:12]
    )
    return HOST_IFNAME_PREFIX + suffix


def ifb_ifname(ifname_host: str) -> str:
    """Name of the IFB device that shapes a host veth's ingress (container egress)."""
    if ifname_host.startswith(HOST_IFNAME_PREFIX):
        suffix = ifname_host[len(HOST_IFNAME_PREFIX) :]
    else:
        suffix = hashlib.sha256(ifname_host.encode()).hexdigest()[:12]
    return (IFB_IFNAME_PREFIX + suffix)[:IFNAMSIZ_MAX]


# --- namespaces ------------------------------------------------------------------------


def container_netns_path(container_pid: int) -> str:
    """The net namespace of a process, as the kernel exposes it."""
    return f"/proc/{container_pid}/ns/net"


def open_netns(path: str | os.PathLike[str], link: str, step: str) -> int:
    """Open a namespace file once, so a recycled pid cannot switch it under us."""
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetworkError(
            f"cannot open network namespace for link {link}",
            step=step,
            errno=exc.errno,
            path=os.fspath(path),
            hint="is the process still running / does the namespace exist?",
        ) from exc


def netlink_socket_in(ns_fd: int, kind: int = socket.SOCK_DGRAM) -> int:
    """Create an rtnetlink socket inside the namespace ``ns_fd``; return its descriptor.

    A short-lived thread ``setns()``-es into the namespace (network namespaces are per
    thread) and opens the socket there; it stays bound to that namespace whichever
    thread uses it afterwards. (Forking a threaded caller, as pyroute2's ``netns=`` does,
    can deadlock.)
    """
    result: dict[str, int] = {}

    def worker() -> None:
        if _libc.setns(ns_fd, _CLONE_NEWNET) != 0:
            result["errno"] = ctypes.get_errno()
            return
        try:
            sock = socket.socket(socket.AF_NETLINK, kind | socket.SOCK_CLOEXEC, 0)
        except OSError as exc:
            result["errno"] = exc.errno or errno_module.EIO
            return
        result["fd"] = sock.detach()

    thread = threading.Thread(target=worker, name="codex32-netns", daemon=True)
    thread.start()
    thread.join()
    if "fd" not in result:
        code = result.get("errno", errno_module.EIO)
        raise OSError(code, os.strerror(code))
    return result["fd"]


# --- checks ----------------------------------------------------------------------------


def check_ifname(name: str, what: str, step: str) -> None:
    if not _IFNAME_RE.match(name):
        raise NetworkError(
            f"invalid {what} name {name!r}",
            step=step,
            hint=f"use 1 to {IFNAMSIZ_MAX} characters without '/', ':' or spaces",
        )


def parse_interface(cidr: str, what: str, step: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(cidr)
    except ValueError as exc:
        raise NetworkError(f"invalid {what} {cidr!r}: {exc}", step=step) from exc
    if "/" not in cidr:
        raise NetworkError(
            f"{what} {cidr!r} has no prefix length", step=step, hint="write it as A.B.C.D/LEN"
        )
    return iface


@contextlib.contextmanager
def _step(message: str, step: str) -> Iterator[None]:
    """Turn an OS error inside the block into a NetworkError with context."""
    try:
        yield
    except NetworkError:
        raise
    except OSError as exc:
        raise NetworkError(message, step=step, errno=exc.errno) from exc


# --- the start's wiring ----------------------------------------------------------------


def _open(ns_fd: int | None, link: str, step: str, where: str) -> Rtnl:
    fd = None
    try:
        if ns_fd is None:
            return Rtnl()
        fd = netlink_socket_in(ns_fd, socket.SOCK_RAW)
        return Rtnl(fd)
    except OSError as exc:
        if fd is not None:
            os.close(fd)
        raise NetworkError(
            f"cannot open netlink in {where} for link {link}", step=step, errno=exc.errno
        ) from exc


def attach_container(
    container_pid: int,
    bridge: str,
    ifname_host: str,
    address_cidr: str,
    gateway: str,
    host_netns: str | os.PathLike[str] | None,
    mtu: int = 1500,
) -> None:
    """Connect a container to a bridge: veth pair, ``eth0`` with address, default route.

    The peer is created directly inside the container's namespace under its final name
    ``eth0`` (IFLA_NET_NS_FD in the veth peer info), so it never exists in the host
    namespace, where an ``eth0`` may already be taken. On failure the host end is
    deleted, which takes the peer with it.
    """
    step = "network.attach"
    check_ifname(bridge, "bridge", step)
    check_ifname(ifname_host, "host veth", step)
    address = parse_interface(address_cidr, "container address", step)
    try:
        gateway_ip = ipaddress.IPv4Address(gateway)
    except ValueError as exc:
        raise NetworkError(f"invalid gateway {gateway!r}: {exc}", step=step) from exc
    if gateway_ip not in address.network:
        raise NetworkError(
            f"gateway {gateway} is outside the container's subnet {address.network}",
            step=step,
        )
    if not 68 <= mtu <= 65535:
        raise NetworkError(f"invalid MTU {mtu}", step=step, hint="use 68..65535")

    container_fd = open_netns(container_netns_path(container_pid), ifname_host, step)
    host_fd = None if host_netns is None else open_netns(host_netns, ifname_host, step)
    try:
        with _open(host_fd, ifname_host, step, "the host namespace") as host:
            with _step(f"cannot look up bridge {bridge} for link {ifname_host}", step):
                found = host.link(bridge)
            if found is None:
                raise NetworkError(
                    f"bridge {bridge} does not exist for link {ifname_host}",
                    step=step,
                    errno=errno_module.ENODEV,
                    hint="call ensure_bridge() for the network first",
                )
            with _step(f"cannot create veth pair {ifname_host} <-> {CONTAINER_IFNAME}", step):
                host.add_veth(ifname_host, CONTAINER_IFNAME, container_fd, mtu)
            try:
                with _step(f"cannot attach {ifname_host} to bridge {bridge}", step):
                    veth = host.link(ifname_host)
                    if veth is None:
                        raise NetworkError(f"veth {ifname_host} vanished", step=step)
                    host.set_up(veth[0], master=found[0])
                _configure_container_side(container_fd, container_pid, address, gateway_ip, step)
            except BaseException:
                with contextlib.suppress(OSError):
                    veth = host.link(ifname_host)
                    if veth is not None:
                        host.delete(veth[0])
                raise
    finally:
        os.close(container_fd)
        if host_fd is not None:
            os.close(host_fd)


def _configure_container_side(
    container_fd: int,
    container_pid: int,
    address: ipaddress.IPv4Interface,
    gateway: ipaddress.IPv4Address,
    step: str,
) -> None:
    where = f"the namespace of pid {container_pid}"
    with _open(container_fd, CONTAINER_IFNAME, step, where) as rtnl:
        with _step(f"cannot bring lo up in the namespace of pid {container_pid}", step):
            lo = rtnl.link("lo")
            if lo is None:
                raise NetworkError(f"no lo in {where}", step=step, errno=errno_module.ENODEV)
            rtnl.set_up(lo[0])
        with _step(f"cannot configure {CONTAINER_IFNAME} in {where}", step):
            eth = rtnl.link(CONTAINER_IFNAME)
            if eth is None:
                raise NetworkError(
                    f"{CONTAINER_IFNAME} did not appear in {where}",
                    step=step,
                    errno=errno_module.ENODEV,
                )
            rtnl.add_address(eth[0], address)
            rtnl.set_up(eth[0])
        with _step(f"cannot add default route via {gateway} in {where}", step):
            rtnl.add_default_route(gateway, eth[0])

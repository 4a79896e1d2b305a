"""Host-side container networking over netlink (pyroute2): bridge, addresses, tc, clean-up.

The engine calls these functions in the launch protocol's network step, after the child
has unshared its network namespace and before it execs. Every function takes the "host"
network namespace as a path (``/run/netns/NAME``, ``/proc/PID/ns/net``) or ``None`` for
the caller's own, so tests can run the host side inside a namespace they created and
never touch the machine's real network.

The veth pair of a start (``attach_container``) and the links' names are
:mod:`codex32._linux.rtnl`'s, stdlib only, re-exported here: a start on a bridge that
is already as it should be never imports pyroute2 (~110-170 ms).

Why a thread and not ``IPRoute(netns=...)``: pyroute2 creates a socket in another
namespace by forking a child, and forking a threaded caller (the HTTP service) can
deadlock; with a missing path it would even *create* a namespace. Here a short-lived
thread ``setns()``-es into the namespace (``rtnl.netlink_socket_in``) and hands the
descriptor back.

Direction of the rate limits (checked by ``tests/integration/test_network_lib.py``):

- container **egress** (what the container sends) leaves its ``eth0`` and *enters* the
  host-side veth, i.e. it is the host veth's **ingress**. The kernel can only police
  ingress, and this kernel has no ``act_police``; shaping beats policing for TCP anyway
  (no drop sawtooth). So the host veth's ingress qdisc redirects every packet (u32
  match-all, ``mirred egress redirect``) to an IFB device, whose egress carries a TBF.
- container **ingress** (what the container receives) is what the host-side veth
  *transmits*, i.e. its **egress**: a TBF as its root qdisc.

Every failure raises :class:`~codex32.errors.NetworkError` naming the link, the step and
the errno, after removing what that call created.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import os
from collections.abc import Iterator
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

# attach_container, the only call of a start, is rtnl's (no pyroute2); re-exported here.
from codex32._linux.rtnl import (
    CONTAINER_IFNAME,
    HOST_IFNAME_PREFIX,
    IFB_IFNAME_PREFIX,
    IFNAMSIZ_MAX,
    attach_container,
    container_netns_path,
    host_ifname,
    ifb_ifname,
)
from codex32._linux.rtnl import check_ifname as _check_ifname
from codex32._linux.rtnl import netlink_socket_in as _netlink_socket_in
from codex32._linux.rtnl import open_netns as _open_netns
from codex32._linux.rtnl import parse_interface as _parse_interface
from codex32.errors import NetworkError

__all__ = [
    "CONTAINER_IFNAME",
    "HOST_IFNAME_PREFIX",
    "IFB_IFNAME_PREFIX",
    "IFNAMSIZ_MAX",
    "Netns",
    "apply_rate_limits",
    "attach_container",
    "container_netns_path",
    "detach_container",
    "ensure_bridge",
    "host_ifname",
    "ifb_ifname",
    "remove_bridge",
    "setup_loopback",
]


_ETH_P_ALL = 0x0003
_TC_H_ROOT = 0xFFFFFFFF
_ROOT_HANDLE = 0x00010000
_INGRESS_HANDLE = 0xFFFF0000
_MAX_RATE_BPS = (2**32 - 1) * 8  # tc's 32-bit rate field counts bytes per second
_TBF_LATENCY_MS = 50
_TBF_MIN_BURST = 16 * 1024  # above any MTU up to jumbo frames

Netns = str | os.PathLike[str] | None


# --- netlink sockets in a given namespace ------------------------------------------------


@contextlib.contextmanager
def _rtnl(ns_fd: int | None, link: str, step: str, where: str) -> Iterator[Any]:
    """An ``IPRoute`` talking to the namespace ``ns_fd`` (None: the caller's own)."""
    sock_fd: int | None = None
    try:
        if ns_fd is None:
            ipr: Any = IPRoute()
        else:
            sock_fd = _netlink_socket_in(ns_fd)
            ipr = IPRoute(fileno=sock_fd)  # owns sock_fd from here on
    except (OSError, NetlinkError) as exc:
        if sock_fd is not None:
            os.close(sock_fd)
        raise _error(f"cannot open netlink in {where} for link {link}", step, exc) from exc
    try:
        yield ipr
    finally:
        ipr.close()


@contextlib.contextmanager
def _host(host_netns: Netns, link: str, step: str) -> Iterator[Any]:
    """An ``IPRoute`` in the host namespace given by path (None: the caller's own)."""
    ns_fd = None if host_netns is None else _open_netns(host_netns, link, step)
    try:
        with _rtnl(ns_fd, link, step, "the host namespace") as ipr:
            yield ipr
    finally:
        if ns_fd is not None:
            os.close(ns_fd)


def _errno_of(exc: BaseException) -> int | None:
    """The errno of a pyroute2 NetlinkError (``.code``) or an OSError."""
    if isinstance(exc, NetlinkError):
        code: int | None = exc.code
        return code
    return exc.errno if isinstance(exc, OSError) else None


def _error(message: str, step: str, exc: BaseException, hint: str | None = None) -> NetworkError:
    return NetworkError(message, step=step, errno=_errno_of(exc), hint=hint)


@contextlib.contextmanager
def _step(message: str, step: str, hint: str | None = None) -> Iterator[None]:
    """Turn a netlink or OS error inside the block into a NetworkError with context."""
    try:
        yield
    except NetworkError:
        raise
    except (OSError, NetlinkError) as exc:
        raise _error(message, step, exc, hint) from exc


def _is_missing(exc: BaseException) -> bool:
    return _errno_of(exc) in (errno_module.ENODEV, errno_module.ENOENT)


def _index(ipr: Any, ifname: str) -> int | None:
    found: list[int] = list(ipr.link_lookup(ifname=ifname))
    return found[0] if found else None


def _link_kind(ipr: Any, index: int) -> str | None:
    msg: Any = ipr.link("get", index=index)[0]
    kind: str | None = msg.get(("linkinfo", "kind"))
    return kind


def _delete_link(ipr: Any, ifname: str) -> bool:
    """Delete a link if present; return whether it existed."""
    index = _index(ipr, ifname)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except NetlinkError as exc:
        if _is_missing(exc):
            return False
        raise
    return True


# --- bridge ----------------------------------------------------------------------------


def ensure_bridge(name: str, gateway_cidr: str, host_netns: Netns) -> None:
    """Create the bridge if missing, give it the gateway address, bring it up.

    Idempotent, so every container start can call it; a bridge created by this call is
    removed again if a later step fails, an existing one is left as it was found.
    """
    step = "network.bridge"
    _check_ifname(name, "bridge", step)
    gateway = _parse_interface(gateway_cidr, "gateway address", step)
    with _host(host_netns, name, step) as ipr:
        created = False
        try:
            index = _index(ipr, name)
            if index is None:
                with _step(f"cannot create bridge {name}", step):
                    ipr.link("add", ifname=name, kind="bridge")
                created = True
                index = _index(ipr, name)
                if index is None:
                    raise NetworkError(f"bridge {name} vanished after creation", step=step)
            else:
                kind = _link_kind(ipr, index)
                if kind != "bridge":
                    raise NetworkError(
                        f"link {name} exists but is a {kind or 'plain'} device, not a bridge",
                        step=step,
                        errno=errno_module.EEXIST,
                        hint="pick another bridge name for the network",
                    )
            with _step(f"cannot set address {gateway_cidr} on bridge {name}", step):
                present = {
                    (str(a.get("address")), int(a["prefixlen"]))
                    for a in ipr.addr("dump", index=index)
                }
                if (str(gateway.ip), gateway.network.prefixlen) not in present:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(gateway.ip),
                        prefixlen=gateway.network.prefixlen,
                    )
            with _step(f"cannot bring bridge {name} up", step):
                ipr.link("set", index=index, state="up")
        except BaseException:
            if created:
                with contextlib.suppress(OSError, NetlinkError):
                    _delete_link(ipr, name)
            raise


def remove_bridge(name: str, host_netns: Netns) -> None:
    """Delete the bridge (and with it its address); a missing bridge is not an error."""
    step = "network.bridge.remove"
    _check_ifname(name, "bridge", step)
    with _host(host_netns, name, step) as ipr, _step(f"cannot delete bridge {name}", step):
        _delete_link(ipr, name)


# --- container links -------------------------------------------------------------------


def setup_loopback(container_pid: int) -> None:
    """Bring ``lo`` up in the container's namespace (modes none/loopback and bridge)."""
    step = "network.loopback"
    path = container_netns_path(container_pid)
    ns_fd = _open_netns(path, "lo", step)
    try:
        with _rtnl(ns_fd, "lo", step, f"the namespace of pid {container_pid}") as ipr:
            _loopback_up(ipr, container_pid, step)
    finally:
        os.close(ns_fd)


def _loopback_up(ipr: Any, container_pid: int, step: str) -> None:
    with _step(f"cannot bring lo up in the namespace of pid {container_pid}", step):
        index = _index(ipr, "lo")
        if index is None:
            raise NetworkError(
                f"no lo in the namespace of pid {container_pid}",
                step=step,
                errno=errno_module.ENODEV,
            )
        ipr.link("set", index=index, state="up")


def detach_container(ifname_host: str, host_netns: Netns) -> None:
    """Remove a container's host veth (its peer goes with it) and its IFB; idempotent.

    Safe after the container died: its namespace then already took the pair along, and
    only the IFB, which lives in the host namespace, is left to remove.
    """
    step = "network.detach"
    _check_ifname(ifname_host, "host veth", step)
    with _host(host_netns, ifname_host, step) as ipr:
        with _step(f"cannot delete veth {ifname_host}", step):
            _delete_link(ipr, ifname_host)
        ifb = ifb_ifname(ifname_host)
        with _step(f"cannot delete IFB {ifb} of {ifname_host}", step):
            _delete_link(ipr, ifb)


# --- rate limits -----------------------------------------------------------------------


def _tbf_parameters(rate_bps: int) -> dict[str, int]:
    """TBF rate in bytes/s and a burst of ~20 ms of traffic (never below a jumbo frame)."""
    rate = rate_bps // 8
    burst = max(rate // 50, _TBF_MIN_BURST)
    limit = rate * _TBF_LATENCY_MS // 1000 + burst
    return {"rate": rate, "burst": burst, "limit": limit}


def _check_rate(value: int | None, what: str, step: str) -> int:
    if value is None:
        return 0
    if value < 0 or value > _MAX_RATE_BPS:
        raise NetworkError(
            f"{what} rate {value} bit/s is out of range",
            step=step,
            hint=f"use 0 (no limit) up to {_MAX_RATE_BPS} bit/s",
        )
    if 0 < value < 8:
        raise NetworkError(f"{what} rate {value} bit/s is below one byte per second", step=step)
    return value


def apply_rate_limits(
    ifname_host: str, egress_bps: int | None, ingress_bps: int | None, host_netns: Netns
) -> None:
    """Limit what the container sends (egress) and receives (ingress), in bits per second.

    ``None`` or 0 leaves a direction unlimited. Replaces any limits applied before; on
    failure none are left. See the module docstring for which qdisc does which.
    """
    step = "network.ratelimit"
    _check_ifname(ifname_host, "host veth", step)
    egress = _check_rate(egress_bps, "egress", step)
    ingress = _check_rate(ingress_bps, "ingress", step)
    ifb = ifb_ifname(ifname_host)
    with _host(host_netns, ifname_host, step) as ipr:
        index = _index(ipr, ifname_host)
        if index is None:
            raise NetworkError(
                f"veth {ifname_host} does not exist",
                step=step,
                errno=errno_module.ENODEV,
                hint="attach the container before limiting its bandwidth",
            )
        with _step(f"cannot clear earlier limits on {ifname_host}", step):
            _clear_rate_limits(ipr, index, ifb)
        try:
            if ingress:
                with _step(f"cannot add TBF (container ingress) on {ifname_host}", step):
                    ipr.tc(
                        "add", "tbf", index, _ROOT_HANDLE, parent=_TC_H_ROOT,
                        **_tbf_parameters(ingress),
                    )  # fmt: skip
            if egress:
                _limit_container_egress(ipr, index, ifname_host, ifb, egress)
        except BaseException:
            with contextlib.suppress(OSError, NetlinkError):
                _clear_rate_limits(ipr, index, ifb)
            raise


def _limit_container_egress(
    ipr: Any, index: int, ifname_host: str, ifb: str, rate_bps: int
) -> None:
    """Redirect the host veth's ingress to an IFB and shape the IFB's egress with TBF."""
    step = "network.ratelimit"
    with _step(f"cannot create IFB {ifb} for {ifname_host}", step):
        ipr.link("add", ifname=ifb, kind="ifb")
        ifb_index = _index(ipr, ifb)
        if ifb_index is None:
            raise NetworkError(f"IFB {ifb} vanished after creation", step=step)
        ipr.link("set", index=ifb_index, state="up")
    with _step(f"cannot add TBF (container egress) on {ifb}", step):
        ipr.tc(
            "add", "tbf", ifb_index, _ROOT_HANDLE, parent=_TC_H_ROOT,
            **_tbf_parameters(rate_bps),
        )  # fmt: skip
    with _step(
        f"cannot redirect ingress of {ifname_host} to {ifb}",
        step,
        hint="the kernel needs sch_ingress, cls_u32 and act_mirred",
    ):
        ipr.tc("add", "ingress", index, _INGRESS_HANDLE)
        ipr.tc(
            "add-filter",
            "u32",
            index,
            parent=_INGRESS_HANDLE,
            prio=1,
            protocol=_ETH_P_ALL,
            target=0,
            keys=["0x0/0x0+0"],
            action={
                "kind": "mirred",
                "direction": "egress",
                "action": "redirect",
                "ifindex": ifb_index,
            },
        )


def _clear_rate_limits(ipr: Any, index: int, ifb: str) -> None:
    """Drop the root and ingress qdiscs of a host veth and its IFB; missing is fine."""
    for kind, handle, parent in (
        (None, _ROOT_HANDLE, _TC_H_ROOT),
        ("ingress", _INGRESS_HANDLE, None),
    ):
        try:
            if kind is None:
                ipr.tc("del", index=index, handle=handle, parent=parent)
            else:
                ipr.tc("del", kind, index, handle)
        except NetlinkError as exc:
            # no such qdisc: ENOENT, or EINVAL from kernels that reject the handle
            if not (_is_missing(exc) or _errno_of(exc) == errno_module.EINVAL):
                raise
    _delete_link(ipr, ifb)

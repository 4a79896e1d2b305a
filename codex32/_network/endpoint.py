"""A bridged container's endpoint record, the peers' hosts files, and its release.

Standard library only (no pydantic, no pyroute2): an ``--rm`` container's monitor,
which runs without site-packages, releases its container's endpoint with this module
in its own process. Starting an engine process for it instead cost ~350 ms per
container (a fresh interpreter importing pydantic and pyroute2).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from codex32._network.etc_files import (
    HOSTS,
    HostEntry,
    names_for,
    render_network_hosts,
    write_in_place,
)
from codex32._network.ipam import IPAM
from codex32._store.state import StateStore, file_lock, is_same_process
from codex32.errors import NetworkError

if TYPE_CHECKING:
    from codex32.config.network import PortMapping

log = logging.getLogger("codex32")

ENDPOINT_FILE = "network.json"

#: How long a dead container's host veth may take to go: the kernel tears a network
#: namespace down asynchronously (a workqueue), a moment after its last process exits.
_LINK_GONE_WAIT = 0.5


@dataclass
class Endpoint:
    """A bridged container's place on its network (``containers/ID/network.json``)."""

    network: str
    name: str
    hostname: str
    address: str  # with prefix: 10.88.0.5/16
    gateway: str
    bridge: str
    ifname_host: str
    ifname_ifb: str = ""  # the IFB shaping its egress, if limited
    ports: list[dict[str, Any]] = field(default_factory=list)
    egress_bps: int | None = None
    ingress_bps: int | None = None
    proxy_pid: int | None = None
    proxy_start_time: int | None = None

    @property
    def ip(self) -> str:
        """The address without its prefix length."""
        return self.address.split("/", 1)[0]

    @property
    def port_mappings(self) -> list[PortMapping]:
        from codex32.config.network import PortMapping  # pydantic: engine side only

        return [PortMapping.model_validate(p) for p in self.ports]

    def proxy_alive(self) -> bool:
        """Whether the proxy recorded is still that process (pid and start time)."""
        return is_same_process(self.proxy_pid, self.proxy_start_time)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Endpoint:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def link_exists(ifname: str) -> bool:
    """Whether a link of that name exists in the caller's namespace (no netlink import)."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        return False
    return True


#: path -> ((inode, mtime, size), parsed JSON): every hosts refresh reads the endpoint of
#: every peer, and these files change only when written whole (atomic rename: a new inode).
_parsed: dict[str, tuple[tuple[int, int, int], dict[str, Any]]] = {}
_PARSED_MAX = 4096


def load_endpoint(store: StateStore, container_id: str) -> Endpoint | None:
    """A container's endpoint record, if it is on a bridge network (the caller's copy)."""
    data = _endpoint_data(store, container_id)
    return None if data is None else Endpoint.from_json(copy.deepcopy(data))


def _endpoint_data(store: StateStore, container_id: str) -> dict[str, Any] | None:
    """A container's endpoint record as parsed JSON, shared: not to be changed.

    A file already parsed by this process and not changed since (one ``stat``) is not
    read again: a refresh on a network of N containers is N stats, not N reads.
    """
    path = os.path.join(store.containers, container_id, ENDPOINT_FILE)
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        known = _parsed.get(path)
        if known is not None and known[0] == key:
            data = known[1]
        else:
            with open(path) as f:
                data = json.load(f)
            if not isinstance(data, dict):
                return None
            if len(_parsed) >= _PARSED_MAX:
                _parsed.clear()
            _parsed[path] = (key, data)
    except (OSError, ValueError):
        return None
    return data


def _forget_others(network: str, holders: Iterable[str]) -> None:
    """Drop the parsed records of ``network`` whose container holds no lease any more
    (removed, by this process or an ``--rm`` monitor): the cache follows the network."""
    keep = set(holders)
    for path, (_key, data) in list(_parsed.items()):
        if data.get("network") == network and os.path.basename(os.path.dirname(path)) not in keep:
            _parsed.pop(path, None)


class EndpointFiles:
    """The file side of bridged endpoints under one storage directory: leases, hosts."""

    def __init__(self, storage_dir: Path, store: StateStore) -> None:
        self.directory = storage_dir / "networks"
        self.ipam = IPAM(self.directory)
        self.store = store

    def hosts_lock(self) -> contextlib.AbstractContextManager[None]:
        """One writer of hosts files at a time (CLI, service and monitors may race)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return file_lock(self.directory / ".hosts.lock")

    def refresh_hosts(self, network: str) -> None:
        """Rewrite, in place, the hosts file of every container holding a lease on ``network``.

        Each change of the lease set is followed by a refresh that reads the leases after
        taking the lock, so the last refresh always writes the final state. Refreshes
        coalesce: one that began reading the leases after this call's change already
        wrote it, so this call has nothing left to do. Fifty containers created at once
        then cost two or three refreshes rather than fifty (each rewrites every member's
        file: O(N) each, O(N^2) in all).
        """
        requested = _now()  # the caller's lease change is older than this
        stamp = self.directory / f".hosts-{network}.refreshed"
        with self.hosts_lock():
            with contextlib.suppress(OSError):
                if _later(stamp.read_text(), requested):
                    return
            try:
                _write_small(stamp, _now())
            except OSError:  # no stamp: later callers refresh themselves, as before
                with contextlib.suppress(OSError):
                    stamp.unlink()
            try:
                leases = self.ipam.lease_texts(network)
            except NetworkError:
                return  # the network is gone
            except OSError:
                with contextlib.suppress(OSError):
                    stamp.unlink()  # this refresh did not happen: let the next one run
                raise
            members = []
            for container_id, leased in leases.items():
                data = _endpoint_data(self.store, container_id)
                if data is not None:
                    address, name = leased, str(data.get("name", ""))
                    own = names_for(name, container_id, data.get("hostname"))
                    members.append(
                        (
                            container_id,
                            HostEntry(address, own),
                            HostEntry(address, names_for(name, container_id)),
                        )
                    )
            _forget_others(network, leases.keys())
            for container_id, text in render_network_hosts(members, network):
                path = os.path.join(self.store.containers, container_id, HOSTS)
                try:
                    write_in_place(path, text, create=False)
                except OSError as exc:
                    log.debug("hosts file of %s not updated: %s", container_id[:12], exc)

    def release(self, container_id: str, *, refresh: bool = True) -> str | None:
        """Give back everything a container holds on its network; idempotent.

        Best effort past the first failure: a link that cannot be deleted is logged and
        the lease and hosts entries are released anyway (``reconcile`` retries links).
        Returns the network left. With ``refresh=False`` the peers' hosts files are the
        caller's to refresh (``refresh_hosts``): a monitor removing its ``--rm``
        container does it once the container is gone, off the removal's critical path.
        """
        endpoint = load_endpoint(self.store, container_id)
        if endpoint is None:
            return None
        if endpoint.proxy_pid is not None and endpoint.proxy_alive():
            from codex32._network.ports import stop_process

            stop_process(endpoint.proxy_pid)
        drop_links(endpoint.ifname_host, endpoint.ifname_ifb)
        self.ipam.release(endpoint.network, container_id)
        with contextlib.suppress(FileNotFoundError):
            (self.store.directory(container_id) / ENDPOINT_FILE).unlink()
        if refresh:
            self.refresh_hosts(endpoint.network)
        return endpoint.network


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


_BOOT_ID = _boot_id()


def _now() -> str:
    """A point in time comparable across processes: the monotonic clock of this boot."""
    return f"{_BOOT_ID} {time.monotonic_ns()}"


def _later(stamp: str, than: str) -> bool:
    """Whether ``stamp`` is later than ``than`` (never across a reboot or if garbled)."""
    boot, _, ns = stamp.partition(" ")
    other_boot, _, other_ns = than.partition(" ")
    try:
        return boot == other_boot and int(ns) > int(other_ns)
    except ValueError:
        return False


def _netlink() -> ModuleType:
    """:mod:`codex32._linux.netlink` (pyroute2), with site-packages added if need be."""
    try:
        from codex32._linux import netlink as network
    except ImportError:
        import site

        site.main()  # python -S: the monitor's interpreter skipped them at start-up
        from codex32._linux import netlink as network
    return network


def _write_small(path: Path, text: str) -> None:
    """Overwrite a small file (no fsync: a lost stamp only costs one more refresh)."""
    path.write_text(text)


def drop_links(ifname_host: str, ifname_ifb: str, wait: float = _LINK_GONE_WAIT) -> None:
    """Delete a container's host veth and IFB if still there.

    The veth goes with the container's namespace, so usually only a shaping IFB (which
    lives in the host namespace) is left. Netlink through pyroute2, also in a monitor
    (which runs without site-packages: it adds them first, at the end of its life and
    only when a link is left).
    """
    names = [n for n in (ifname_host, ifname_ifb) if n]
    # The kernel dismantles the namespace on a work queue, with an RCU grace period:
    # usually gone within ~10-20 ms of the last process. Deleting the veth here would
    # wait out the same grace period; so look often (an ioctl each), then less often.
    started = time.monotonic()
    deadline = started + wait
    while link_exists(ifname_host) and (now := time.monotonic()) < deadline:
        time.sleep(0.001 if now - started < 0.05 else 0.01)
    if not any(link_exists(n) for n in names):
        return
    try:
        netlink = _netlink()
    except ImportError as exc:
        log.warning("could not remove the links of %s: %s", ifname_host, exc)
        return  # reconcile retries
    try:
        netlink.detach_container(ifname_host, None)
    except NetworkError as exc:
        log.warning("could not remove the links of %s: %s", ifname_host, exc)

"""Engine-side container networking: endpoints, networks as objects, hosts files, ports.

The engine calls this module at four points of a container's life (``_engine.py``):

=========  =================================================================================
create     ``prepare``: lease an address (bridge networks), write the container's
           ``hosts`` and ``resolv.conf`` into its directory (bound into it by the plan) and
           its endpoint record ``network.json``; add it to its peers' ``hosts`` files.
           Refused, before anything exists, for a missing network, an exhausted subnet
           or a host port a running container already publishes.
created    ``attach`` (the launch protocol's network step; PID 1 exists, runs nothing):
           bridge up, veth pair with ``eth0`` inside, address and default route, tc
           limits, the port proxy. A failure undoes this call's work and raises, and the
           launch protocol then kills PID 1: the start is aborted cleanly.
remove     ``release``: proxy, leftover links, lease, peers' ``hosts`` entries, record.
reconcile  leases of containers that no longer exist, links and proxies of dead ones,
           the masquerade table after a reboot.
=========  =================================================================================

The address is leased at create and kept until remove (as the issue asks), so a
container keeps its address across restarts and peers' ``hosts`` entries stay true.
Every peer holding a lease on the network is listed in ``hosts``, running or not:
the address is reserved for it, so the name never resolves to someone else.

A start on a bridge that is as it should be wires its veth with :mod:`codex32._linux.rtnl`
(stdlib); :mod:`codex32._linux.netlink` (pyroute2, ~110-170 ms to import) only makes or
fixes bridges, removes leftovers and sets rate limits.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codex32._network import bridge_cache
from codex32._network.endpoint import (
    ENDPOINT_FILE,
    Endpoint,
    EndpointFiles,
    drop_links,
    link_exists,
    load_endpoint,
)
from codex32._network.etc_files import (
    HOSTS,
    RESOLV_CONF,
    SYSTEMD_RESOLV_CONF,
    HostEntry,
    names_for,
    read_text,
    render_hosts,
    render_resolv_conf,
    write_in_place,
)
from codex32._network.ipam import NetworkDefinition
from codex32._store.state import ContainerState, StateStore, process_start_time
from codex32._store.state import write_json_atomic as _write_json_atomic
from codex32.config.container import ContainerConfig
from codex32.config.network import HOST, NONE, PortMapping, format_rate, is_bridged, resolve_network
from codex32.errors import Codex32Error, NetworkError

log = logging.getLogger("codex32")

HOST_HOSTS = "/etc/hosts"
HOST_RESOLV_CONF = "/etc/resolv.conf"
_LIVE = (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)


class Networking:
    """Networks and container endpoints under one storage directory."""

    def __init__(self, storage_dir: Path, store: StateStore) -> None:
        self._files = EndpointFiles(storage_dir, store)
        self._refreshing: dict[str, threading.Thread] = {}
        self._refreshing_lock = threading.Lock()
        self.directory = self._files.directory
        self.ipam = self._files.ipam
        self._store = store

    # -- networks ------------------------------------------------------------------

    def create_network(
        self, name: str, subnet: str, gateway: str | None = None, masquerade: bool = False
    ) -> NetworkDefinition:
        """Define a network and build its bridge (and NAT); all of it or nothing."""
        from codex32._linux import netlink

        definition = self.ipam.create_network(name, subnet, gateway, None, masquerade)
        bridge_existed = link_exists(definition.bridge)
        try:
            netlink.ensure_bridge(definition.bridge, definition.gateway_cidr, None)
            if masquerade:
                self._apply_nat()
        except BaseException:
            with contextlib.suppress(Codex32Error):
                self.ipam.remove_network(name)
            if not bridge_existed:
                with contextlib.suppress(Codex32Error):
                    netlink.remove_bridge(definition.bridge, None)
            if masquerade:
                with contextlib.suppress(Codex32Error):
                    self._apply_nat()
            raise
        return definition

    def remove_network(self, name: str) -> NetworkDefinition:
        """Delete a network, its bridge and its NAT rule; refused while containers use it."""
        definition = self.ipam.remove_network(name)
        bridge_cache.forget(definition.bridge)
        if link_exists(definition.bridge):
            from codex32._linux import netlink

            netlink.remove_bridge(definition.bridge, None)
        if definition.masquerade:
            self._apply_nat()
        return definition

    def inspect_network(self, name: str) -> dict[str, Any]:
        """A network's definition, whether its bridge is up, and who is on it."""
        definition = self.ipam.get_network(name)
        containers = []
        for container_id, address in sorted(self.ipam.leases(name).items()):
            endpoint = load_endpoint(self._store, container_id)
            containers.append(
                {
                    "Id": container_id,
                    "Name": endpoint.name if endpoint else None,
                    "IPAddress": str(address),
                }
            )
        return {
            "Name": definition.name,
            "Subnet": definition.subnet,
            "Gateway": definition.gateway,
            "Bridge": definition.bridge,
            "BridgePresent": link_exists(definition.bridge),
            "Masquerade": definition.masquerade,
            "Default": definition.name == self.ipam.default_network.name,
            "Containers": containers,
        }

    def _apply_nat(self) -> None:
        from codex32._linux.nftables import MasqueradedNetwork, apply_masquerade

        apply_masquerade(
            [
                MasqueradedNetwork(n.name, n.subnet)
                for n in self.ipam.list_networks()
                if n.masquerade
            ]
        )

    # -- files a container gets ----------------------------------------------------

    def files(self, container_id: str, network: str) -> tuple[tuple[str, str], ...]:
        """(source, target) binds of the network files for the plan."""
        directory = self._store.directory(container_id)
        binds = [(str(directory / HOSTS), "/etc/hosts")]
        if network != NONE:
            binds.append((str(directory / RESOLV_CONF), "/etc/resolv.conf"))
        return tuple(binds)

    # -- create --------------------------------------------------------------------

    def prepare(
        self,
        container_id: str,
        name: str,
        hostname: str,
        config: ContainerConfig,
        network: str,
        *,
        background_refresh: bool = False,
        durable: bool = True,
    ) -> None:
        """At create: files, and for a bridge network the lease and the endpoint record
        (fsync'd if ``durable``: not for an ``--rm`` container, see ``create``).

        On failure the caller runs :meth:`release` (idempotent) and deletes the
        container's directory, so nothing is left. With ``background_refresh`` the
        network's hosts files (the new one's peers, and it in every peer's: O(N)) are
        rewritten on a thread, beside the launch's forks; ``attach`` (or ``release``)
        waits for it, so once the container runs every peer can resolve its name.
        """
        directory = self._store.directory(container_id)
        if network == HOST:
            # As Docker: the host's own files, copied (the host's may be a symlink).
            write_in_place(directory / HOSTS, read_text(HOST_HOSTS) or render_hosts(None, [], None))
            write_in_place(directory / RESOLV_CONF, read_text(HOST_RESOLV_CONF) or "")
            return
        if network == NONE:
            own = HostEntry("127.0.1.1", names_for(name, container_id, hostname))
            write_in_place(directory / HOSTS, render_hosts(own, [], None))
            return
        definition = self.ipam.get_network(network)
        self._check_ports(container_id, name, config.ports)
        lease = self.ipam.allocate(definition.name, container_id, durable=durable)
        from codex32._linux.rtnl import host_ifname, ifb_ifname

        endpoint = Endpoint(
            network=definition.name,
            name=name,
            hostname=hostname,
            address=lease.cidr,
            gateway=str(lease.gateway),
            bridge=definition.bridge,
            ifname_host=host_ifname(container_id),
            ifname_ifb=ifb_ifname(host_ifname(container_id)),
            ports=[p.model_dump(mode="json") for p in config.ports],
            egress_bps=config.network_egress_rate,
            ingress_bps=config.network_ingress_rate,
        )
        self._save(container_id, endpoint, durable=durable)
        host_resolv = read_text(HOST_RESOLV_CONF) or ""
        write_in_place(
            directory / RESOLV_CONF, render_resolv_conf(host_resolv, read_text(SYSTEMD_RESOLV_CONF))
        )
        write_in_place(directory / HOSTS, render_hosts(None, [], definition.name))
        if background_refresh:
            self._refresh_beside(container_id, definition.name)
        else:
            self._files.refresh_hosts(definition.name)

    def _refresh_beside(self, container_id: str, network: str) -> None:
        def refresh() -> None:
            try:
                self._files.refresh_hosts(network)
            except Exception as exc:  # the network's next change refreshes them
                log.warning("hosts files of network %s not refreshed: %s", network, exc)

        thread = threading.Thread(target=refresh, name=f"codex32-hosts-{container_id[:12]}")
        with self._refreshing_lock:
            self._refreshing[container_id] = thread
        thread.start()

    def _refreshed(self, container_id: str) -> None:
        """Wait for the hosts refresh ``prepare`` left running for this container."""
        with self._refreshing_lock:
            thread = self._refreshing.pop(container_id, None)
        if thread is not None:
            thread.join()

    def _check_ports(self, container_id: str, name: str, ports: list[PortMapping]) -> None:
        """Refuse a host port that a running container publishes already."""
        for port in ports:
            holder = self._holder(container_id, port)
            if holder is not None:
                raise NetworkError(
                    f"host port {port.host_ip}:{port.host_port}/{port.protocol} is already "
                    f"published by container {holder}",
                    container=name,
                    step="network.ports",
                    hint="choose another host port, or stop that container first",
                )

    def _holder(self, container_id: str, port: PortMapping) -> str | None:
        """The name of a running container publishing a port that clashes with ``port``."""
        for other_id in self._store.ids():
            if other_id == container_id:
                continue
            endpoint = load_endpoint(self._store, other_id)
            if endpoint is None or not endpoint.proxy_alive():
                continue
            if any(port.conflicts_with(p) for p in endpoint.port_mappings):
                return endpoint.name
        return None

    # -- start ---------------------------------------------------------------------

    def attach(self, container_id: str, pid: int) -> None:
        """Wire PID ``pid`` (created, not yet running) to its network; all or nothing."""
        endpoint = load_endpoint(self._store, container_id)
        if endpoint is None:
            return  # host or none: the plan's loopback step is all there is
        try:
            self._wire(container_id, pid, endpoint)
        finally:
            self._refreshed(container_id)

    def _wire(self, container_id: str, pid: int, endpoint: Endpoint) -> None:
        # pyroute2 (codex32._linux.netlink, ~110-170 ms to import) only for what the
        # common start does not need: a bridge to make or fix, leftovers, rate limits.
        from codex32._linux import rtnl

        definition = self.ipam.get_network(endpoint.network)
        self._stop_proxy(endpoint)  # one left by an earlier run, if it still lingers
        bridge, gateway = definition.bridge, definition.gateway
        if not bridge_cache.is_ready(bridge, gateway) and not bridge_cache.verify(
            bridge, definition.gateway_cidr
        ):
            from codex32._linux import netlink

            netlink.ensure_bridge(definition.bridge, definition.gateway_cidr, None)
            bridge_cache.remember(definition.bridge, definition.gateway)
        if definition.masquerade:
            self._apply_nat()
        if link_exists(endpoint.ifname_host) or link_exists(endpoint.ifname_ifb):
            from codex32._linux import netlink

            netlink.detach_container(endpoint.ifname_host, None)  # an earlier run's
        rtnl.attach_container(
            pid, definition.bridge, endpoint.ifname_host, endpoint.address, endpoint.gateway, None
        )
        try:
            if endpoint.egress_bps or endpoint.ingress_bps:
                from codex32._linux import netlink

                netlink.apply_rate_limits(
                    endpoint.ifname_host, endpoint.egress_bps, endpoint.ingress_bps, None
                )
            if endpoint.ports:
                endpoint.proxy_pid = self._publish(container_id, pid, endpoint)
                endpoint.proxy_start_time = process_start_time(endpoint.proxy_pid)
                self._save(container_id, endpoint, durable=False)  # a process: no reboot
        except BaseException:
            self._stop_proxy(endpoint)
            with contextlib.suppress(Codex32Error):
                from codex32._linux import netlink

                netlink.detach_container(endpoint.ifname_host, None)
            raise

    def detach(self, container_id: str) -> None:
        """Undo ``attach`` after a failed start: the proxy and links go, the lease stays."""
        endpoint = load_endpoint(self._store, container_id)
        if endpoint is not None:
            self._stop_proxy(endpoint)
            drop_links(endpoint.ifname_host, endpoint.ifname_ifb)

    def _publish(self, container_id: str, pid: int, endpoint: Endpoint) -> int:
        from codex32._network.ports import Publish, bind_listeners, start_proxy

        ports = [
            Publish(p.host_ip, p.host_port, p.protocol, endpoint.ip, p.container_port)
            for p in endpoint.port_mappings
        ]
        try:
            sockets = bind_listeners(ports)
        except NetworkError as exc:
            clash = next(
                (
                    (p, holder)
                    for p in endpoint.port_mappings
                    if (holder := self._holder(container_id, p)) is not None
                ),
                None,
            )
            if clash is None:
                raise
            raise NetworkError(
                f"host port {clash[0].host_ip}:{clash[0].host_port}/{clash[0].protocol} is "
                f"already published by container {clash[1]}",
                step="network.ports",
                errno=exc.errno,
                hint="choose another host port, or stop that container first",
            ) from exc
        try:
            return start_proxy(container_id, pid, ports, sockets)
        finally:
            for sock in sockets:
                sock.close()

    def _stop_proxy(self, endpoint: Endpoint) -> None:
        if endpoint.proxy_pid is not None and endpoint.proxy_alive():
            from codex32._network.ports import stop_process

            stop_process(endpoint.proxy_pid)

    # -- remove --------------------------------------------------------------------

    def release(self, container_id: str) -> None:
        """Give back everything a container holds on its network; idempotent.

        Best effort past the first failure: a link that cannot be deleted is logged and
        the lease and hosts entries are released anyway (``reconcile`` retries links).
        """
        self._refreshed(container_id)
        self._files.release(container_id)

    # -- reconcile -----------------------------------------------------------------

    def reconcile(self) -> list[str]:
        """Clean what crashed containers left; return the ids whose leases were freed."""
        known = set(self._store.ids())
        freed: list[str] = []
        for definition in self.ipam.list_networks():
            # A lease whose directory exists belongs to a create under way elsewhere
            # (the lease comes before state.json); really dead half-made directories
            # were removed before this runs.
            stale = [
                cid
                for cid in self.ipam.leases(definition.name)
                if cid not in known and not self._store.directory(cid).exists()
            ]
            for container_id in stale:
                from codex32._linux.rtnl import host_ifname, ifb_ifname

                veth = host_ifname(container_id)
                drop_links(veth, ifb_ifname(veth))
                self.ipam.release(definition.name, container_id)
                freed.append(container_id)
            if stale:
                self._files.refresh_hosts(definition.name)
        for container_id in known:
            endpoint = load_endpoint(self._store, container_id)
            if endpoint is None:
                continue
            with contextlib.suppress(Codex32Error, OSError):
                if self._store.load(container_id).status in _LIVE:
                    continue
            self._stop_proxy(endpoint)
            drop_links(endpoint.ifname_host, endpoint.ifname_ifb)
        if any(n.masquerade for n in self.ipam.list_networks()):
            try:
                self._apply_nat()  # the table is gone after a reboot
            except NetworkError as exc:
                log.warning("could not restore the masquerade rules: %s", exc)
        return freed

    # -- inspect -------------------------------------------------------------------

    def settings(self, container_id: str, config: ContainerConfig) -> dict[str, Any]:
        """``NetworkSettings`` for inspect: mode, address, ports, limits, proxy."""
        network = resolve_network(config.network, config.isolation.value)
        endpoint = load_endpoint(self._store, container_id)
        if endpoint is None:
            return {"Mode": network if not is_bridged(network) else "bridge", "Network": network}
        return {
            "Mode": "bridge",
            "Network": endpoint.network,
            "IPAddress": endpoint.ip,
            "PrefixLen": int(endpoint.address.split("/")[1]),
            "Gateway": endpoint.gateway,
            "Bridge": endpoint.bridge,
            "HostInterface": endpoint.ifname_host,
            "Ports": [p.describe() for p in endpoint.port_mappings],
            "RateLimits": {
                "Egress": format_rate(endpoint.egress_bps) if endpoint.egress_bps else None,
                "Ingress": format_rate(endpoint.ingress_bps) if endpoint.ingress_bps else None,
            },
            "PortProxyPid": endpoint.proxy_pid if endpoint.proxy_alive() else None,
        }

    # -- records and hosts files -----------------------------------------------------

    def endpoint(self, container_id: str) -> Endpoint | None:
        """A container's endpoint record, if it is on a bridge network."""
        return load_endpoint(self._store, container_id)

    def _save(self, container_id: str, endpoint: Endpoint, *, durable: bool = True) -> None:
        """Atomically; ``durable``: fsync'd (at create, committed with state.json)."""
        path = self._store.directory(container_id) / ENDPOINT_FILE
        _write_json_atomic(path, asdict(endpoint), fsync=durable)


class NetworkCollection:
    """``engine.networks``: networks as objects, as docker-py's ``client.networks``."""

    def __init__(self, networking: Networking) -> None:
        self._networking = networking

    def create(
        self, name: str, subnet: str, *, gateway: str | None = None, masquerade: bool = False
    ) -> NetworkDefinition:
        """Create a network and its bridge (``codex32 network create``)."""
        return self._networking.create_network(name, subnet, gateway, masquerade)

    def get(self, name: str) -> NetworkDefinition:
        """A network's definition (NetworkError if it does not exist)."""
        return self._networking.ipam.get_network(name)

    def list(self) -> list[NetworkDefinition]:
        """Every network, the default one first."""
        return self._networking.ipam.list_networks()

    def inspect(self, name: str) -> dict[str, Any]:
        """A network's definition with its bridge state and containers."""
        return self._networking.inspect_network(name)

    def remove(self, name: str) -> None:
        """Remove a network (refused while in use; the default one cannot be removed)."""
        self._networking.remove_network(name)

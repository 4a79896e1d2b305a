"""Network definitions and IPv4 address leases, persisted as JSON under one directory.

Layout of the store directory::

    networks.json        {"version": 1, "networks": {NAME: definition}}
    leases/NAME.json     {"version": 1, "network": NAME, "subnet": ..., "next": ...,
                          "leases": {CONTAINER_ID: ADDRESS}}
    .lock                flock(2) target: every read-modify-write holds it exclusively

Why a lock plus atomic writes: the CLI and the host service may allocate at the same
time, from different processes; ``flock`` serialises them (it also excludes threads of
one process, since each operation opens its own descriptor), and ``os.replace`` of a
temp file means a crash leaves the old or the new file, never half of one. The data are
fsync'ed before the rename, except for a release and an ``--rm`` container's lease: a
lease a power cut gives back to a container that is gone is freed by
``Networking.reconcile``.

Addresses are handed out round-robin from a cursor (as CNI's host-local plugin does),
so a released address is reused only after the rest of the subnet was offered: peers'
ARP caches and stale connections do not meet a new container on an old address.

The default network ``bridge`` (bridge ``codex32-br0``, ``10.88.0.0/16``, gateway
``10.88.0.1``, Podman's default) exists without being created and cannot be removed.
"""

from __future__ import annotations

import contextlib
import errno as errno_module
import fcntl
import hashlib
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codex32._store.state import write_text_atomic
from codex32.errors import NetworkError

DEFAULT_NETWORK_NAME = "bridge"
DEFAULT_BRIDGE = "codex32-br0"
DEFAULT_SUBNET = "10.88.0.0/16"

_FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")
_MAX_PREFIXLEN = 30  # a gateway and at least one container


@dataclass(frozen=True)
class NetworkDefinition:
    """A named network: its subnet, gateway and bridge; data only, checked on creation."""

    name: str
    subnet: str
    gateway: str
    bridge: str
    masquerade: bool = False

    @property
    def ip_network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def gateway_cidr(self) -> str:
        """The bridge's address, as :func:`ensure_bridge` wants it (``10.88.0.1/16``)."""
        return f"{self.gateway}/{self.ip_network.prefixlen}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetworkDefinition:
        return cls(
            name=str(data["name"]),
            subnet=str(data["subnet"]),
            gateway=str(data["gateway"]),
            bridge=str(data["bridge"]),
            masquerade=bool(data.get("masquerade", False)),
        )


@dataclass(frozen=True)
class Lease:
    """An address held by one container on one network."""

    network: str
    container_id: str
    address: ipaddress.IPv4Address
    prefixlen: int
    gateway: ipaddress.IPv4Address

    @property
    def cidr(self) -> str:
        """The address with its prefix (``10.88.0.2/16``), as ``attach_container`` wants."""
        return f"{self.address}/{self.prefixlen}"


def default_bridge_name(network_name: str) -> str:
    """A bridge name for a user network: ``c32br`` + 10 hex chars, within IFNAMSIZ."""
    return "c32br" + hashlib.sha256(network_name.encode()).hexdigest()[:10]


def make_network(
    name: str,
    subnet: str,
    gateway: str | None = None,
    bridge: str | None = None,
    masquerade: bool = False,
) -> NetworkDefinition:
    """Validate the pieces of a network and fill in defaults (first host as gateway)."""
    step = "network.define"
    if not _NAME_RE.match(name):
        raise NetworkError(
            f"invalid network name {name!r}",
            step=step,
            hint="use 1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
        )
    try:
        net = ipaddress.IPv4Network(subnet, strict=True)
    except ValueError as exc:
        raise NetworkError(
            f"invalid subnet {subnet!r} for network {name}: {exc}",
            step=step,
            hint="write an IPv4 network with host bits zero, e.g. 10.89.0.0/24",
        ) from exc
    if net.prefixlen > _MAX_PREFIXLEN:
        raise NetworkError(
            f"subnet {net} of network {name} is too small",
            step=step,
            hint=f"use a prefix of /{_MAX_PREFIXLEN} or shorter (a gateway plus containers)",
        )
    if gateway is None:
        gw = net.network_address + 1
    else:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise NetworkError(f"invalid gateway {gateway!r}: {exc}", step=step) from exc
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise NetworkError(f"gateway {gw} is not a host address of subnet {net}", step=step)
    bridge_name = bridge if bridge is not None else default_bridge_name(name)
    if not _IFNAME_RE.match(bridge_name):
        raise NetworkError(
            f"invalid bridge name {bridge_name!r} for network {name}",
            step=step,
            hint="use 1-15 characters without '/', ':' or spaces",
        )
    return NetworkDefinition(
        name=name, subnet=str(net), gateway=str(gw), bridge=bridge_name, masquerade=masquerade
    )


class IPAM:
    """Networks and their address leases, stored under ``directory``.

    Each public method takes the store lock for its whole read-modify-write, so a
    method is atomic with respect to other processes using the same directory.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        default_subnet: str = DEFAULT_SUBNET,
        default_bridge: str = DEFAULT_BRIDGE,
    ) -> None:
        self.directory = Path(directory)
        self.default_network = make_network(
            DEFAULT_NETWORK_NAME, default_subnet, bridge=default_bridge
        )

    # --- networks ----------------------------------------------------------------------

    def create_network(
        self,
        name: str,
        subnet: str,
        gateway: str | None = None,
        bridge: str | None = None,
        masquerade: bool = False,
    ) -> NetworkDefinition:
        """Define a network; refused if the name, bridge or any address range is taken."""
        definition = make_network(name, subnet, gateway, bridge, masquerade)
        step = "network.create"
        with self._locked():
            networks = self._read_networks()
            if name in networks:
                raise NetworkError(
                    f"network {name} already exists",
                    step=step,
                    errno=errno_module.EEXIST,
                    hint="choose another name or remove the network first",
                )
            new_net = definition.ip_network
            for other in networks.values():
                if other.ip_network.overlaps(new_net):
                    raise NetworkError(
                        f"subnet {new_net} of network {name} overlaps subnet "
                        f"{other.subnet} of network {other.name}",
                        step=step,
                        hint="choose a subnet that shares no address with existing networks",
                    )
                if other.bridge == definition.bridge:
                    raise NetworkError(
                        f"bridge {definition.bridge} is already used by network {other.name}",
                        step=step,
                    )
            networks[name] = definition
            self._write_networks(networks)
        return definition

    def get_network(self, name: str) -> NetworkDefinition:
        """The definition of ``name``; NetworkError if there is no such network."""
        with self._locked(shared=True):
            networks = self._read_networks()
        if name not in networks:
            raise NetworkError(
                f"network {name} does not exist",
                step="network.lookup",
                errno=errno_module.ENOENT,
                hint="list networks with 'codex32 network ls' or create it first",
            )
        return networks[name]

    def list_networks(self) -> list[NetworkDefinition]:
        """All networks, the default one first, then by name."""
        with self._locked(shared=True):
            networks = self._read_networks()
        default = networks.pop(DEFAULT_NETWORK_NAME)
        return [default, *sorted(networks.values(), key=lambda n: n.name)]

    def remove_network(self, name: str) -> NetworkDefinition:
        """Delete a network definition; refused for the default one and while in use."""
        step = "network.remove"
        if name == DEFAULT_NETWORK_NAME:
            raise NetworkError(
                f"the default network {name} cannot be removed", step=step, errno=errno_module.EPERM
            )
        with self._locked():
            networks = self._read_networks()
            if name not in networks:
                raise NetworkError(
                    f"network {name} does not exist", step=step, errno=errno_module.ENOENT
                )
            leases = self._read_leases(networks[name])["leases"]
            if leases:
                users = ", ".join(sorted(leases)[:5])
                raise NetworkError(
                    f"network {name} is in use by {len(leases)} container(s): {users}",
                    step=step,
                    errno=errno_module.EBUSY,
                    hint="remove or disconnect those containers first",
                )
            definition = networks.pop(name)
            self._write_networks(networks)
            with contextlib.suppress(FileNotFoundError):
                self._lease_path(name).unlink()
        return definition

    # --- leases ------------------------------------------------------------------------

    def allocate(self, network: str, container_id: str, *, durable: bool = True) -> Lease:
        """Lease a free address to ``container_id``; the same one if it holds one already.

        ``durable=False``: not fsync'd, for a container a power cut removes anyway
        (``--rm``): a lease lost is never used again, one left is freed by ``reconcile``.
        """
        step = "network.ipam.allocate"
        if not container_id:
            raise NetworkError("empty container id", step=step)
        with self._locked():
            definition = self._network_or_error(network, step)
            state = self._read_leases(definition)
            leases: dict[str, str] = state["leases"]
            net = definition.ip_network
            if container_id in leases:
                return self._lease(definition, container_id, leases[container_id])
            # As text: parsing every lease into an address was O(leases) per start.
            taken = set(leases.values())
            taken.add(definition.gateway)
            first = int(net.network_address) + 1
            last = int(net.broadcast_address) - 1
            size = last - first + 1
            cursor = int(ipaddress.IPv4Address(state.get("next") or str(net.network_address + 1)))
            if not first <= cursor <= last:
                cursor = first
            for step_count in range(size):
                candidate = first + (cursor - first + step_count) % size
                if str(ipaddress.IPv4Address(candidate)) not in taken:
                    break
            else:
                raise NetworkError(
                    f"no free address left in network {network} ({net}, {len(leases)} leased)",
                    container=container_id,
                    step=step,
                    errno=errno_module.ENOSPC,
                    hint="remove unused containers or create a network with a larger subnet",
                )
            address = ipaddress.IPv4Address(candidate)
            leases[container_id] = str(address)
            state["next"] = str(ipaddress.IPv4Address(first + (candidate - first + 1) % size))
            self._write_json(self._lease_path(network), state, fsync=durable)
        return self._lease(definition, container_id, str(address))

    def release(self, network: str, container_id: str) -> bool:
        """Return a container's address to the pool; False if it held none (idempotent)."""
        with self._locked():
            networks = self._read_networks()
            if network not in networks:
                return False
            state = self._read_leases(networks[network])
            if state["leases"].pop(container_id, None) is None:
                return False
            self._write_json(self._lease_path(network), state, fsync=False)
        return True

    def lease_of(self, network: str, container_id: str) -> Lease | None:
        """The lease a container holds on a network, if any."""
        with self._locked(shared=True):
            definition = self._network_or_error(network, "network.ipam.lookup")
            address = self._read_leases(definition)["leases"].get(container_id)
        return None if address is None else self._lease(definition, container_id, address)

    def leases(self, network: str) -> dict[str, ipaddress.IPv4Address]:
        """Container id -> address for every lease on a network."""
        with self._locked(shared=True):
            definition = self._network_or_error(network, "network.ipam.lookup")
            raw: dict[str, str] = self._read_leases(definition)["leases"]
        return {cid: ipaddress.IPv4Address(addr) for cid, addr in raw.items()}

    def lease_texts(self, network: str) -> dict[str, str]:
        """``leases`` as written (``10.88.0.5``), unparsed: a hosts refresh of N members
        wants the text, and parsing N addresses was a tenth of it."""
        with self._locked(shared=True):
            definition = self._network_or_error(network, "network.ipam.lookup")
            raw: dict[str, str] = self._read_leases(definition)["leases"]
        return raw

    # --- storage -----------------------------------------------------------------------

    def _lease(self, definition: NetworkDefinition, container_id: str, address: str) -> Lease:
        return Lease(
            network=definition.name,
            container_id=container_id,
            address=ipaddress.IPv4Address(address),
            prefixlen=definition.ip_network.prefixlen,
            gateway=ipaddress.IPv4Address(definition.gateway),
        )

    def _network_or_error(self, name: str, step: str) -> NetworkDefinition:
        networks = self._read_networks()
        if name not in networks:
            raise NetworkError(
                f"network {name} does not exist",
                step=step,
                errno=errno_module.ENOENT,
                hint="list networks with 'codex32 network ls' or create it first",
            )
        return networks[name]

    @contextlib.contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise NetworkError(
                "cannot open the IPAM store",
                step="network.ipam.lock",
                errno=exc.errno,
                path=str(self.directory),
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the last descriptor releases the lock

    def _lease_path(self, network: str) -> Path:
        return self.directory / "leases" / f"{network}.json"

    def _read_networks(self) -> dict[str, NetworkDefinition]:
        data = self._read_json(self.directory / "networks.json")
        networks = {
            name: NetworkDefinition.from_json(item)
            for name, item in (data or {}).get("networks", {}).items()
        }
        networks[DEFAULT_NETWORK_NAME] = self.default_network
        return networks

    def _write_networks(self, networks: dict[str, NetworkDefinition]) -> None:
        """Persist user networks; the default one comes from configuration, not the file."""
        payload = {
            "version": _FORMAT_VERSION,
            "networks": {
                name: n.to_json()
                for name, n in sorted(networks.items())
                if name != DEFAULT_NETWORK_NAME
            },
        }
        self._write_json(self.directory / "networks.json", payload)

    def _read_leases(self, definition: NetworkDefinition) -> dict[str, Any]:
        path = self._lease_path(definition.name)
        data = self._read_json(path)
        if data is None:
            return {
                "version": _FORMAT_VERSION,
                "network": definition.name,
                "subnet": definition.subnet,
                "next": None,
                "leases": {},
            }
        if data.get("subnet") != definition.subnet:
            raise NetworkError(
                f"lease file of network {definition.name} is for subnet "
                f"{data.get('subnet')}, the network has {definition.subnet}",
                step="network.ipam.load",
                path=str(path),
                hint="the store was edited by hand; remove the lease file if no container uses it",
            )
        return data

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise NetworkError(
                "cannot read the IPAM store",
                step="network.ipam.load",
                errno=getattr(exc, "errno", None),
                path=str(path),
            ) from exc
        if not isinstance(data, dict):
            raise NetworkError(
                "IPAM store file does not hold a JSON object",
                step="network.ipam.load",
                path=str(path),
            )
        return data

    def _write_json(self, path: Path, payload: dict[str, Any], *, fsync: bool = True) -> None:
        """Write ``payload`` atomically: temp file in the same directory, fsync, rename."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Compact: the C encoder (indent= falls back to pure Python, O(leases)).
            write_text_atomic(path, json.dumps(payload, sort_keys=True) + "\n", fsync=fsync)
        except OSError as exc:
            raise NetworkError(
                "cannot write the IPAM store",
                step="network.ipam.save",
                errno=exc.errno,
                path=str(path),
            ) from exc

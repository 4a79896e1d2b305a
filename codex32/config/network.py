"""The network part of a container's config: modes, published ports, bandwidth rates.

Data and validation only (layer L0, as ``config.py`` which uses it): nothing here
touches the OS. Kept apart from ``config.py`` so the network vocabulary (mode names,
the ``-p`` syntax, tc's rate units) lives in one place that the engine, the CLI and
the unit tests share.

Modes, as ``ContainerConfig.network`` names them:

* ``None``: the isolation level's default (MINIMAL ``host``, STANDARD the default
  network ``bridge``, STRICT ``none``, as the original design promises STRICT a
  loopback-only network "unless asked").
* ``host``: the host's (the engine's) network namespace.
* ``none`` (alias ``loopback``): a namespace of its own with only ``lo``, up.
* ``bridge`` or any other network name: a namespace of its own, wired to that
  network's Linux bridge with a veth pair (see ``codex32 network create``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

HOST = "host"
NONE = "none"
DEFAULT_NETWORK = "bridge"
_ALIASES = {"loopback": NONE}

# The same rule as the IPAM's network names (``_network/ipam.py``).
NETWORK_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$"

MIN_RATE_BPS = 8
MAX_RATE_BPS = (2**32 - 1) * 8  # tc's 32-bit rate field counts bytes per second

# tc(8)'s units: bit-based ones count bits, "bps"-based ones count bytes (x8).
_RATE_UNITS: dict[str, int] = {
    "": 1, "bit": 1,
    "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
    "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40,
    "bps": 8,
    "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9, "tbps": 8 * 10**12,
    "kibps": 8 * 2**10, "mibps": 8 * 2**20, "gibps": 8 * 2**30, "tibps": 8 * 2**40,
}  # fmt: skip


def normalize_network(value: str) -> str:
    """Check a ``--network`` value; ``loopback`` becomes ``none``."""
    text = value.strip()
    if text.startswith("container:"):
        raise ValueError(
            f"network {value!r}: joining another container's network namespace is not "
            "supported; put both containers on the same network instead"
        )
    text = _ALIASES.get(text, text)
    if not re.fullmatch(NETWORK_NAME_PATTERN, text):
        raise ValueError(
            f"invalid network {value!r}: use host, none, bridge or the name of a network "
            "(letters, digits, '_', '.', '-'; see `codex32 network ls`)"
        )
    return text


def resolve_network(network: str | None, isolation: str) -> str:
    """The network a container joins: the given one, or its isolation level's default."""
    if network is not None:
        return network
    return {"minimal": HOST, "standard": DEFAULT_NETWORK}.get(str(isolation), NONE)


def is_bridged(network: str) -> bool:
    """Whether ``network`` (as resolved) is a bridge network, i.e. neither host nor none."""
    return network not in (HOST, NONE)


def parse_rate(value: str | int) -> int:
    """A bandwidth in bits per second from tc's notation (``10mbit``, ``1.5gbit``, ``1mbps``).

    As in tc, ``bit`` units count bits and ``bps`` units count *bytes* per second; a
    bare number is bits per second.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid rate {value!r}")
    if isinstance(value, int):
        bits = value
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", value.lower())
        if not match or match.group(2) not in _RATE_UNITS:
            raise ValueError(
                f"invalid rate {value!r}: use a number with a unit such as 500kbit, "
                "10mbit or 1gbit (tc's units; 'mbps' means megabytes per second)"
            )
        bits = round(float(match.group(1)) * _RATE_UNITS[match.group(2)])
    if not MIN_RATE_BPS <= bits <= MAX_RATE_BPS:
        raise ValueError(
            f"rate {value!r} is out of range: use {MIN_RATE_BPS} bit/s to "
            f"{format_rate(MAX_RATE_BPS)} (leave it unset for no limit)"
        )
    return bits


def format_rate(bits: int) -> str:
    """The shortest exact tc spelling of a rate: 8000000 -> ``8mbit``."""
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"


class PortMapping(BaseModel):
    """A published port (``-p [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]``).

    ``host_ip`` defaults to ``0.0.0.0``, every address of the host, as in Docker and
    as the issue asks ("reachable on the host's address"). That default is safe here
    where Docker's is not: the engine publishes through a proxy that listens like any
    host service, so the host's firewall (INPUT) still decides who may connect,
    whereas Docker's DNAT rules bypass it. Give ``127.0.0.1:`` to keep a port local.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    host_ip: str = "0.0.0.0"

    @field_validator("host_ip")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(
                f"host address {value!r} of a published port is not an IPv4 address"
            ) from None
        if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
            raise ValueError(f"host address {value} cannot accept connections")
        return str(address)

    @classmethod
    def parse(cls, spec: str) -> PortMapping:
        """Parse Docker's ``[IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]``."""
        body, _, protocol = spec.strip().partition("/")
        parts = body.split(":")
        if len(parts) == 2:
            host_ip, host_port, container_port = "0.0.0.0", parts[0], parts[1]
        elif len(parts) == 3:
            host_ip, host_port, container_port = parts
        else:
            raise ValueError(
                f"invalid published port {spec!r}: use HOSTPORT:CONTAINERPORT[/tcp|udp] "
                "or IP:HOSTPORT:CONTAINERPORT[/tcp|udp]"
            )
        protocol = protocol.lower() or "tcp"
        if protocol not in ("tcp", "udp"):
            raise ValueError(f"invalid protocol {protocol!r} in {spec!r}: use tcp or udp")
        numbers = []
        for text in (host_port, container_port):
            if not text.isdigit():
                raise ValueError(
                    f"invalid port {text!r} in {spec!r}: give one port number (1-65535); "
                    "ranges and random host ports are not supported"
                )
            numbers.append(int(text))
        return cls(
            host_ip=host_ip or "0.0.0.0",
            host_port=numbers[0],
            container_port=numbers[1],
            protocol=protocol,
        )

    def describe(self) -> str:
        """Docker's ``0.0.0.0:8080->80/tcp``."""
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"

    def conflicts_with(self, other: PortMapping) -> bool:
        """Whether both cannot be bound at once (same port; same or wildcard address)."""
        if self.protocol != other.protocol or self.host_port != other.host_port:
            return False
        wildcard = "0.0.0.0"
        return wildcard in (self.host_ip, other.host_ip) or self.host_ip == other.host_ip


def check_network_options(
    network: str,
    ports: list[PortMapping],
    egress_bps: int | None,
    ingress_bps: int | None,
) -> None:
    """Refuse combinations that cannot work; ``network`` is the resolved one."""
    if not is_bridged(network):
        wanted = [
            what
            for what, given in (
                ("published ports", bool(ports)),
                ("network rate limits", egress_bps is not None or ingress_bps is not None),
            )
            if given
        ]
        if wanted:
            why = (
                "the container uses the host's network, so its ports and traffic are the host's"
                if network == HOST
                else "the container has only a loopback interface"
            )
            raise ValueError(
                f"{' and '.join(wanted)} need a bridge network, but this container's network "
                f"is {network!r}: {why}; use --network bridge (or a network of your own)"
            )
    for index, port in enumerate(ports):
        for other in ports[index + 1 :]:
            if port.conflicts_with(other):
                raise ValueError(
                    f"published ports {port.describe()} and {other.describe()} use the same "
                    "host port"
                )

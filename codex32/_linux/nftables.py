"""Outbound NAT (masquerade) for networks that ask for it, with nftables.

Everything codex32 adds to the kernel's ruleset lives in one table, ``ip codex32``, and
the table is always written whole from the network definitions, in one ``nft -f``
transaction (add, delete, add again: atomic, so the table is never half-written and
never left holding rules of removed networks). Other tables (a host firewall,
Docker's) are not touched.

Why the ``nft`` binary and not pyroute2's nftables module: pyroute2 0.9's nftables API
calls itself a prototype, has no builders for the payload/meta/nat expressions a
masquerade rule needs (they would be raw netlink attribute lists here) and sends each
object in its own batch, so an update could leave a half-built table. ``nft`` applies a
whole table as one transaction and the rules are readable as written, by an admin too
(``nft list table ip codex32``). It is needed only when a network uses masquerade
(Debian package ``nftables``); nothing else in codex32 depends on it.

For the masqueraded traffic to leave at all, the host must forward IPv4, so
:func:`enable_ip_forward` sets ``net.ipv4.ip_forward`` (as Docker does) and never
unsets it: other software may rely on it by then. A host firewall whose ``forward``
chain drops packets still wins over these rules (nftables drops are final).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from codex32.errors import NetworkError

TABLE = "codex32"
_IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
_TIMEOUT = 10


@dataclass(frozen=True)
class MasqueradedNetwork:
    """A network whose containers' outbound traffic leaves with the host's address."""

    name: str
    subnet: str


def masquerade_ruleset(networks: Sequence[MasqueradedNetwork]) -> str:
    """The ``nft -f`` script that makes the table hold exactly these networks' rules.

    Traffic from the subnet to anywhere but the subnet itself is masqueraded: traffic
    between containers of one network (bridged) and to the gateway keeps its address.
    """
    lines = [f"table ip {TABLE} {{}}", f"delete table ip {TABLE}"]
    if not networks:
        return "\n".join(lines) + "\n"
    lines += [
        f"table ip {TABLE} {{",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ]
    for network in sorted(networks, key=lambda n: n.name):
        subnet = ipaddress.IPv4Network(network.subnet, strict=True)
        if not _NAME_RE.match(network.name):
            raise NetworkError(f"invalid network name {network.name!r}", step="network.nat")
        lines.append(
            f'\t\tip saddr {subnet} ip daddr != {subnet} masquerade comment "{network.name}"'
        )
    lines += ["\t}", "}"]
    return "\n".join(lines) + "\n"


def nft_available() -> bool:
    """Whether the ``nft`` binary is installed."""
    return shutil.which("nft") is not None


def apply_masquerade(networks: Sequence[MasqueradedNetwork]) -> None:
    """Make ``table ip codex32`` hold exactly the rules for ``networks`` (atomically).

    With no networks the table is deleted, so a host that never used masquerade never
    needs ``nft``: this returns at once if the binary is missing and there is nothing
    to install.
    """
    step = "network.nat"
    nft = shutil.which("nft")
    if nft is None:
        if not networks:
            return
        raise NetworkError(
            "masquerade needs the nft binary, which is not installed",
            step=step,
            hint="apt-get install nftables (or create the network without --masquerade)",
        )
    script = masquerade_ruleset(networks)
    try:
        result = subprocess.run(
            [nft, "-f", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"cannot run nft: {exc}", step=step) from exc
    if result.returncode != 0:
        raise NetworkError(
            f"nft refused the masquerade rules: {result.stderr.strip()}",
            step=step,
            hint="the kernel needs nf_tables with NAT (nft_masq)",
        )
    if networks:
        enable_ip_forward()


def current_ruleset() -> str:
    """``nft list table ip codex32`` ('' if the table or nft is missing)."""
    nft = shutil.which("nft")
    if nft is None:
        return ""
    result = subprocess.run(
        [nft, "list", "table", "ip", TABLE],
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
    )
    return result.stdout if result.returncode == 0 else ""


def enable_ip_forward() -> None:
    """Turn on IPv4 forwarding in the caller's network namespace."""
    try:
        with open(_IP_FORWARD, "r+", encoding="ascii") as handle:
            if handle.read().strip() != "1":
                handle.seek(0)
                handle.write("1\n")
    except OSError as exc:
        raise NetworkError(
            "cannot enable IPv4 forwarding for masquerade",
            step="network.nat",
            errno=exc.errno,
            path=_IP_FORWARD,
        ) from exc

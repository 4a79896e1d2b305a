"""A container's ``/etc/hosts`` and ``/etc/resolv.conf``: what they say, and rewriting them.

The files live in the container's directory and are bind-mounted (read-only) over the
template's. A bind mount pins the *inode*, so updates must rewrite the content of the
same file: a new file renamed over it would stay invisible inside the container. To
keep a reader from ever seeing an empty file, the new text is written over the old
from offset 0 and only then cut to length (no ``O_TRUNC`` first).

Pure text functions plus that one write: unit-tested without root.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HOSTS = "hosts"
RESOLV_CONF = "resolv.conf"

# Docker's fallback when the host only has loopback resolvers (unreachable from a
# container's own namespace, e.g. systemd-resolved's 127.0.0.53).
FALLBACK_NAMESERVERS: tuple[str, ...] = ("8.8.8.8", "8.8.4.4")
SYSTEMD_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"

_LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass(frozen=True)
class HostEntry:
    """One line of /etc/hosts: an address and the names that resolve to it."""

    address: str
    names: tuple[str, ...]

    def line(self) -> str:
        return f"{self.address}\t{' '.join(dict.fromkeys(self.names))}\n"


def render_hosts(own: HostEntry | None, peers: Sequence[HostEntry], network: str | None) -> str:
    """The container's /etc/hosts: localhost, itself, then its peers by name."""
    text = _LOCALHOST
    if own is not None:
        text += "# this container\n" + own.line()
    if peers:
        text += f"# other containers on network {network}\n"
        text += "".join(p.line() for p in sorted(peers, key=lambda p: p.names))
    return text


def render_network_hosts(
    members: Sequence[tuple[str, HostEntry, HostEntry]], network: str
) -> Iterator[tuple[str, str]]:
    """Every member's /etc/hosts: ``render_hosts(own, all other peers, network)``.

    ``members`` are (key, own entry, entry as a peer sees it). Each peer line is made
    once and each file is the whole peer block with the member's own line cut out (two
    slices), so a refresh of N members costs O(N) lines, not O(N^2). The files come
    one at a time, to be written as they come: all N at once were N^2 lines in memory
    (~15 MB at 500 members), which the engine's allocator kept after the refresh.
    """
    ordered = sorted(members, key=lambda m: m[2].names)
    lines = []
    spans: dict[str, tuple[int, int]] = {}
    at = 0
    for key, _own, peer in ordered:
        line = peer.line()
        spans[key] = (at, at + len(line))
        at += len(line)
        lines.append(line)
    block = "".join(lines)
    header = f"# other containers on network {network}\n"
    for key, own, _peer in members:
        start, end = spans[key]
        peers = block[:start] + block[end:]
        yield key, render_hosts(own, [], network) + (header + peers if peers else "")


def nameservers(text: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf text."""
    found = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            found.append(fields[1])
    return found


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.partition("%")[0]).is_loopback
    except ValueError:
        return False


def render_resolv_conf(host_text: str, alternative: str | None = None) -> str:
    """A container's resolv.conf from the host's: loopback nameservers cannot work there.

    Loopback resolvers are dropped (they would be the container's own ``lo``); if none
    is left, ``alternative`` (systemd-resolved's upstream list) is tried, then Docker's
    fallback. Search and option lines are kept.
    """
    kept = []
    for line in host_text.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and (len(fields) < 2 or _is_loopback(fields[1])):
            continue
        kept.append(line)
    if nameservers("\n".join(kept)):
        return "\n".join(kept).strip("\n") + "\n"
    if alternative is not None:
        usable = [a for a in nameservers(alternative) if not _is_loopback(a)]
        if usable:
            kept += [f"nameserver {a}" for a in usable]
            return "\n".join(kept).strip("\n") + "\n"
    kept += [f"nameserver {a}" for a in FALLBACK_NAMESERVERS]
    return "# codex32: the host has only loopback resolvers; fallback servers\n" + (
        "\n".join(kept).strip("\n") + "\n"
    )


def read_text(path: str | os.PathLike[str]) -> str | None:
    """A host file's text, or None if it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def write_in_place(path: str | os.PathLike[str], text: str, *, create: bool = True) -> None:
    """Rewrite ``path``'s content without replacing its inode (it may be bind-mounted).

    Creates the file (0644) if missing and ``create``; a peer's file is rewritten with
    ``create=False``, so a container being removed meanwhile does not get it back (its
    mode is the one it was made with: no ``fchmod``, a syscall per peer and refresh).
    Write first, cut after: a reader sees the old text, the new one, or briefly a mix,
    never an empty file.
    """
    data = text.encode()
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        if create:
            os.fchmod(fd, 0o644)
    finally:
        os.close(fd)


def names_for(name: str, container_id: str, hostname: str | None = None) -> tuple[str, ...]:
    """The names a container answers to: hostname (own entry only), name, short id."""
    names: Iterable[str | None] = (hostname, name, container_id[:12])
    return tuple(dict.fromkeys(n for n in names if n))

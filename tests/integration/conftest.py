"""Integration tests run the engine's host side in a network namespace of their own.

STANDARD containers join the default bridge network: starting one creates the bridge
``codex32-br0``, a veth pair, tc qdiscs, a port proxy and, for masquerade networks,
an nftables table, all in the network namespace the engine runs in. So that no test
ever touches the machine's real network, the session first moves the pytest process
(single-threaded at that point) into a fresh network namespace with only ``lo``, up;
the engine, its fork server, the containers' monitors and proxies all inherit it as
their "host". At the end the process goes back, and the session fails if the real
namespace gained a link meanwhile.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from codex32._linux import syscalls

IS_ROOT = os.geteuid() == 0


def host_links() -> set[str]:
    """Link names in the calling thread's network namespace."""
    return {name for _index, name in socket.if_nameindex()}


def _loopback_up() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


@pytest.fixture(scope="session", autouse=True)
def isolated_host_network() -> Iterator[None]:
    """Run the whole integration session in a throw-away network namespace."""
    if not IS_ROOT:
        yield
        return
    real = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    before = host_links()
    try:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        _loopback_up()
        yield
    finally:
        syscalls.setns(real, syscalls.CLONE_NEWNET)
        os.close(real)
    added = host_links() - before
    if added:
        pytest.fail(f"the real network namespace gained links: {sorted(added)}", pytrace=False)

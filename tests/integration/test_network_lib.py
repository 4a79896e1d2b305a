"""The host-side network library against the real kernel, inside throw-away namespaces.

Nothing here touches the machine's network: the "host" side is a network namespace the
fixture creates, each "container" is an ``unshare --net`` process with a namespace of
its own, and all traffic flows between those namespaces. The host namespace is held by
an ``unshare --net`` process too and passed as ``/proc/PID/ns/net``: unlike ``ip netns
add`` (which bind-mounts ``/run/netns``) that leaves the mount table untouched. The
fixture kills every process it made and then checks that no namespace, veth, IFB or
bridge is left.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from codex32._linux import netlink as network
from codex32._linux import rtnl
from codex32.errors import NetworkError

BRIDGE = "c32tbr0"
GATEWAY_CIDR = "10.231.0.1/24"
GATEWAY = "10.231.0.1"
RATE_BPS = 8_000_000
BULK_BYTES = 3_000_000  # ~3 s at 8 mbit/s
PORT = 5201

_SERVER = r"""
import json, socket, sys, time
mode = sys.argv[1]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[2])))
srv.listen(1)
srv.settimeout(30)
conn, peer = srv.accept()
conn.settimeout(30)
received, first, last = 0, None, None
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    now = time.monotonic()
    first = first if first is not None else now
    last = now
    received += len(chunk)
    if mode == "echo":
        conn.sendall(b"pong:" + chunk)
conn.close()
print(json.dumps({"bytes": received, "seconds": (last or 0) - (first or 0), "peer": peer[0]}))
"""

_CLIENT = r"""
import socket, sys, time
host, port, mode, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
deadline = time.monotonic() + 10
while True:
    try:
        sock = socket.create_connection((host, port), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
sock.settimeout(30)
if mode == "echo":
    sock.sendall(b"ping")
    print(sock.recv(100).decode())
else:
    block = b"x" * (1 << 16)
    left = size
    while left > 0:
        sent = sock.send(block[: min(left, len(block))])
        left -= sent
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
sock.close()
"""


def _missing_tools() -> list[str]:
    return [tool for tool in ("ip", "unshare", "nsenter") if shutil.which(tool) is None]


def _ip(*args: str) -> str:
    return subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=10
    ).stdout


def _host_links() -> set[str]:
    """Link names in the test process's own namespace (read-only look)."""
    out = _ip("-o", "link", "show")
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@dataclass(frozen=True)
class Transfer:
    """What the receiving server saw, and what the client printed."""

    received: int
    seconds: float
    peer: str
    client_output: str

    @property
    def mbit_per_s(self) -> float:
        return self.received * 8 / self.seconds / 1e6


@dataclass
class Lab:
    """A host netns and the "container" processes of one test."""

    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    host_pid: int = 0

    @property
    def host_netns(self) -> str:
        return f"/proc/{self.host_pid}/ns/net"

    def container(self) -> int:
        """Start a process in a fresh network namespace; return its pid once unshared."""
        proc = subprocess.Popen(["unshare", "--net", "--", "sleep", "300"])
        self.procs.append(proc)
        mine = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                ns = os.readlink(f"/proc/{proc.pid}/ns/net")
                if ns != mine:
                    self.namespaces.append(ns)
                    return proc.pid
            except FileNotFoundError:
                break
            time.sleep(0.01)
        raise AssertionError(f"pid {proc.pid} did not unshare its network namespace")

    def host_ip(self, *args: str) -> str:
        """``ip ARGS`` in the test's host namespace."""
        return self.run_in(self.host_pid, "ip", *args)

    def host_links(self) -> set[str]:
        out = self.host_ip("-o", "link", "show")
        return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}

    def run_in(self, pid: int, *argv: str, timeout: float = 30) -> str:
        return subprocess.run(
            ["nsenter", f"--net=/proc/{pid}/ns/net", *argv],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout

    def transfer(self, sender: int, receiver: int, address: str, mode: str, size: int) -> Transfer:
        """Run a TCP server in ``receiver`` and a client in ``sender`` that connects to it."""
        enter = ["nsenter", f"--net=/proc/{receiver}/ns/net"]
        server = subprocess.Popen(
            [*enter, sys.executable, "-c", _SERVER, mode, str(PORT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            client_out = self.run_in(
                sender, sys.executable, "-c", _CLIENT, address, str(PORT), mode, str(size)
            )
            out, err = server.communicate(timeout=40)
        finally:
            if server.poll() is None:
                server.kill()
                server.communicate()
        assert server.returncode == 0, err
        report = json.loads(out)
        return Transfer(
            received=int(report["bytes"]),
            seconds=float(report["seconds"]),
            peer=str(report["peer"]),
            client_output=client_out,
        )


def _netns_holders(ns: str) -> list[str]:
    """Processes whose net namespace is ``ns`` (``net:[INODE]``), and nsfs mounts of it."""
    holders = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == ns:
                    holders.append(f"pid {entry}")
            except OSError:
                continue
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        holders += [line.strip() for line in mounts if ns in line]
    return holders


@pytest.fixture
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, veth pairs, bridges and tc qdiscs")
    missing = _missing_tools()
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (iproute2 / util-linux) to build namespaces")
    host_before = _host_links()
    state = Lab()
    try:
        state.host_pid = state.container()
        yield state
    finally:
        for proc in state.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert all(proc.returncode is not None for proc in state.procs)
    for ns in state.namespaces:
        assert not _netns_holders(ns), f"network namespace {ns} is still alive"
    leaked = {
        link for link in _host_links() - host_before if link.startswith(("c32", "i32", "eth0"))
    }
    assert not leaked, f"links leaked into the test process's namespace: {leaked}"


def _addresses(lab: Lab, pid: int) -> str:
    return lab.run_in(pid, "ip", "-o", "-4", "addr", "show")


# --- pure helpers (no root) ----------------------------------------------------------------


def test_host_ifname_is_deterministic_and_fits_ifnamsiz() -> None:
    cid = "0123456789abcdef" * 4
    assert network.host_ifname(cid) == "c320123456789ab"
    assert network.host_ifname(cid) == network.host_ifname(cid)
    odd = network.host_ifname("My-Bot_1")
    assert odd.startswith("c32") and len(odd) == network.IFNAMSIZ_MAX
    assert network.ifb_ifname(network.host_ifname(cid)) == "i320123456789ab"
    assert len(network.ifb_ifname("some-long-name")) <= network.IFNAMSIZ_MAX
    with pytest.raises(NetworkError):
        network.host_ifname("")


# --- against the kernel ----------------------------------------------------------------------


@pytest.mark.root
def test_two_containers_on_a_bridge_exchange_tcp(lab: Lab) -> None:
    fds_before = set(os.listdir("/proc/self/fd"))
    network.ensure_bridge(BRIDGE, GATEWAY_CIDR, lab.host_netns)
    network.ensure_bridge(BRIDGE, GATEWAY_CIDR, lab.host_netns)  # idempotent
    bridge_addr = lab.host_ip("-o", "-4", "addr", "show", "dev", BRIDGE)
    assert bridge_addr.count(GATEWAY_CIDR) == 1
    assert "UP" in lab.host_ip("link", "show", BRIDGE)

    pid_a, pid_b = lab.container(), lab.container()
    veth_a, veth_b = network.host_ifname("a" * 64), network.host_ifname("b" * 64)
    network.attach_container(pid_a, BRIDGE, veth_a, "10.231.0.2/24", GATEWAY, lab.host_netns)
    network.attach_container(
        pid_b, BRIDGE, veth_b, "10.231.0.3/24", GATEWAY, lab.host_netns, mtu=1400
    )

    assert {veth_a, veth_b, BRIDGE} <= lab.host_links()
    assert f"master {BRIDGE}" in lab.host_ip("link", "show", veth_a)
    assert "10.231.0.2/24" in _addresses(lab, pid_a)
    assert "127.0.0.1/8" in _addresses(lab, pid_a)  # lo is up
    assert f"default via {GATEWAY} dev eth0" in lab.run_in(pid_a, "ip", "route", "show")
    assert "mtu 1400" in lab.run_in(pid_b, "ip", "link", "show", "eth0")
    assert "mtu 1400" in lab.host_ip("link", "show", veth_b)

    there = lab.transfer(pid_a, pid_b, "10.231.0.3", "echo", 4)
    assert (there.received, there.peer) == (4, "10.231.0.2")
    assert there.client_output.strip() == "pong:ping"
    back = lab.transfer(pid_b, pid_a, "10.231.0.2", "echo", 4)
    assert (back.received, back.peer) == (4, "10.231.0.3")

    network.detach_container(veth_a, lab.host_netns)
    assert veth_a not in lab.host_links()
    assert "eth0" not in lab.run_in(pid_a, "ip", "-o", "link", "show")
    network.detach_container(veth_a, lab.host_netns)  # idempotent
    network.detach_container(veth_b, lab.host_netns)
    network.remove_bridge(BRIDGE, lab.host_netns)
    network.remove_bridge(BRIDGE, lab.host_netns)  # idempotent
    assert lab.host_links() == {"lo"}
    assert set(os.listdir("/proc/self/fd")) <= fds_before, "netlink sockets or ns fds leaked"


@pytest.mark.root
def test_rate_limits_shape_the_right_direction(lab: Lab) -> None:
    network.ensure_bridge(BRIDGE, GATEWAY_CIDR, lab.host_netns)
    pid_a, pid_b = lab.container(), lab.container()
    veth_a, veth_b = network.host_ifname("a" * 64), network.host_ifname("b" * 64)
    network.attach_container(pid_a, BRIDGE, veth_a, "10.231.0.2/24", GATEWAY, lab.host_netns)
    network.attach_container(pid_b, BRIDGE, veth_b, "10.231.0.3/24", GATEWAY, lab.host_netns)

    def mbit(sender: int, receiver: int, address: str) -> float:
        report = lab.transfer(sender, receiver, address, "bulk", BULK_BYTES)
        assert report.received == BULK_BYTES
        return report.mbit_per_s

    # container egress: what A sends is limited, what A receives is not
    network.apply_rate_limits(veth_a, RATE_BPS, None, lab.host_netns)
    assert network.ifb_ifname(veth_a) in lab.host_links()
    egress = mbit(pid_a, pid_b, "10.231.0.3")
    unlimited_in = mbit(pid_b, pid_a, "10.231.0.2")
    print(f"egress limit 8 mbit: A->B {egress:.2f} mbit/s, B->A {unlimited_in:.1f} mbit/s")
    assert 6.0 <= egress <= 10.0, f"egress measured {egress:.2f} mbit/s"
    assert unlimited_in > 4 * 8.0, f"unlimited direction measured {unlimited_in:.2f} mbit/s"

    # container ingress: replaces the egress limit (IFB gone), limits what A receives
    network.apply_rate_limits(veth_a, None, RATE_BPS, lab.host_netns)
    assert network.ifb_ifname(veth_a) not in lab.host_links()
    ingress = mbit(pid_b, pid_a, "10.231.0.2")
    unlimited_out = mbit(pid_a, pid_b, "10.231.0.3")
    print(f"ingress limit 8 mbit: B->A {ingress:.2f} mbit/s, A->B {unlimited_out:.1f} mbit/s")
    assert 6.0 <= ingress <= 10.0, f"ingress measured {ingress:.2f} mbit/s"
    assert unlimited_out > 4 * 8.0, f"unlimited direction measured {unlimited_out:.2f} mbit/s"

    network.apply_rate_limits(veth_a, RATE_BPS, RATE_BPS, lab.host_netns)
    qdiscs = lab.host_ip("link", "show", veth_a)
    assert "qdisc tbf" in qdiscs
    network.apply_rate_limits(veth_a, None, None, lab.host_netns)  # clears both
    assert "qdisc tbf" not in lab.host_ip("link", "show", veth_a)
    assert network.ifb_ifname(veth_a) not in lab.host_links()

    network.apply_rate_limits(veth_a, RATE_BPS, RATE_BPS, lab.host_netns)
    network.detach_container(veth_a, lab.host_netns)  # takes the IFB along
    network.detach_container(veth_b, lab.host_netns)
    network.remove_bridge(BRIDGE, lab.host_netns)
    assert lab.host_links() == {"lo"}


@pytest.mark.root
def test_failures_raise_network_error_and_leave_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = lab.container()
    veth = network.host_ifname("c" * 64)

    with pytest.raises(NetworkError, match="does not exist") as missing_bridge:
        network.attach_container(pid, BRIDGE, veth, "10.231.0.2/24", GATEWAY, lab.host_netns)
    assert missing_bridge.value.step == "network.attach"
    assert lab.host_links() == {"lo"}

    network.ensure_bridge(BRIDGE, GATEWAY_CIDR, lab.host_netns)
    network.attach_container(pid, BRIDGE, veth, "10.231.0.2/24", GATEWAY, lab.host_netns)

    # the container already has an eth0: the second pair must not be left half-built
    other = network.host_ifname("d" * 64)
    with pytest.raises(NetworkError) as taken:
        network.attach_container(pid, BRIDGE, other, "10.231.0.4/24", GATEWAY, lab.host_netns)
    assert taken.value.errno == 17  # EEXIST
    assert other in str(taken.value)
    assert other not in lab.host_links() and veth in lab.host_links()

    # the same host name twice: refused, the first attachment stays intact
    pid2 = lab.container()
    with pytest.raises(NetworkError) as dup:
        network.attach_container(pid2, BRIDGE, veth, "10.231.0.5/24", GATEWAY, lab.host_netns)
    assert dup.value.errno == 17
    assert "eth0" not in lab.run_in(pid2, "ip", "-o", "link", "show")
    assert "10.231.0.2/24" in _addresses(lab, pid)

    # a process that does not exist
    with pytest.raises(NetworkError) as gone:
        network.attach_container(
            2**22 + 12345, BRIDGE, other, "10.231.0.6/24", GATEWAY, lab.host_netns
        )
    assert gone.value.errno == 2  # ENOENT
    assert other not in lab.host_links()

    # a failure after the pair exists rolls it back (the peer goes with the host end)
    real_configure = rtnl._configure_container_side  # attach_container is rtnl's

    def configure_then_fail(*args: Any, **kwargs: Any) -> None:
        real_configure(*args, **kwargs)
        raise NetworkError("injected failure", step="network.attach")

    monkeypatch.setattr(rtnl, "_configure_container_side", configure_then_fail)
    with pytest.raises(NetworkError, match="injected"):
        network.attach_container(pid2, BRIDGE, other, "10.231.0.5/24", GATEWAY, lab.host_netns)
    monkeypatch.undo()
    assert other not in lab.host_links()
    assert "eth0" not in lab.run_in(pid2, "ip", "-o", "link", "show")

    # a rate-limit failure half-way leaves no qdisc and no IFB
    def fail_egress(*args: Any, **kwargs: Any) -> None:
        raise NetworkError("injected failure", step="network.ratelimit")

    monkeypatch.setattr(network, "_limit_container_egress", fail_egress)
    with pytest.raises(NetworkError, match="injected"):
        network.apply_rate_limits(veth, RATE_BPS, RATE_BPS, lab.host_netns)
    monkeypatch.undo()
    assert "qdisc tbf" not in lab.host_ip("link", "show", veth)
    assert network.ifb_ifname(veth) not in lab.host_links()

    # bad input is refused before anything is created
    with pytest.raises(NetworkError, match="outside"):
        network.attach_container(pid2, BRIDGE, other, "10.231.0.6/24", "10.9.9.9", lab.host_netns)
    with pytest.raises(NetworkError, match="invalid"):
        network.ensure_bridge("bad/name", GATEWAY_CIDR, lab.host_netns)
    with pytest.raises(NetworkError, match="not a bridge"):
        network.ensure_bridge(veth, GATEWAY_CIDR, lab.host_netns)
    with pytest.raises(NetworkError) as no_veth:
        network.apply_rate_limits(other, RATE_BPS, None, lab.host_netns)
    assert no_veth.value.errno == 19  # ENODEV
    with pytest.raises(NetworkError, match="out of range"):
        network.apply_rate_limits(veth, -1, None, lab.host_netns)
    with pytest.raises(NetworkError) as no_ns:
        network.ensure_bridge(BRIDGE, GATEWAY_CIDR, "/run/netns/c32t-does-not-exist")
    assert no_ns.value.errno == 2
    assert not os.path.exists("/run/netns/c32t-does-not-exist")

    network.detach_container(veth, lab.host_netns)
    network.remove_bridge(BRIDGE, lab.host_netns)
    assert lab.host_links() == {"lo"}


@pytest.mark.root
def test_setup_loopback_brings_only_lo_up(lab: Lab) -> None:
    pid = lab.container()
    assert "127.0.0.1" not in _addresses(lab, pid)
    network.setup_loopback(pid)
    assert "127.0.0.1/8" in _addresses(lab, pid)
    assert len(lab.run_in(pid, "ip", "-o", "link", "show").splitlines()) == 1  # only lo
    assert lab.transfer(pid, pid, "127.0.0.1", "echo", 4).received == 4


@pytest.mark.root
def test_bridge_verify_accepts_only_what_ensure_bridge_leaves() -> None:
    """The light check a fresh process (the CLI) makes instead of importing pyroute2."""
    from codex32._network import bridge_cache

    other = "c32tvfy1"
    try:
        assert not bridge_cache.verify(BRIDGE, GATEWAY_CIDR)  # missing
        network.ensure_bridge(BRIDGE, GATEWAY_CIDR, None)
        assert bridge_cache.verify(BRIDGE, GATEWAY_CIDR)
        assert bridge_cache.is_ready(BRIDGE, GATEWAY)  # remembered
        assert not bridge_cache.verify(BRIDGE, "10.231.0.1/16")  # another prefix
        assert not bridge_cache.verify(BRIDGE, "10.231.0.9/24")  # another address
        _ip("link", "set", BRIDGE, "down")
        assert not bridge_cache.verify(BRIDGE, GATEWAY_CIDR)
        _ip("link", "add", other, "type", "veth", "peer", "name", "c32tvfy2")
        _ip("addr", "add", GATEWAY_CIDR.replace(".0.1/", ".9.1/"), "dev", other)
        _ip("link", "set", other, "up")
        assert not bridge_cache.verify(other, "10.231.9.1/24")  # up, addressed, no bridge
    finally:
        bridge_cache.forget(BRIDGE)
        for name in (BRIDGE, other):
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)

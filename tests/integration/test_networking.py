"""Container networking end to end: real containers, real kernel, a throw-away "host".

The whole session runs in a network namespace of its own (``conftest.py`` next to this
file), so the bridges, veths, IFBs, proxies and nftables rules made here exist only
there, and all traffic flows between that namespace and the containers'. Each test
removes what it made and checks that nothing (link, lease, proxy, rule) is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import BUSYBOX, PYTHON, snapshot

from codex32 import (
    Container,
    ContainerConfig,
    ContainerEngine,
    IsolationType,
    LaunchError,
    NetworkError,
)
from codex32._linux.netlink import ifb_ifname
from codex32._linux.nftables import current_ruleset

pytestmark = pytest.mark.root

DEFAULT_GATEWAY = "10.88.0.1"
RATE_BPS = 8_000_000
BULK_BYTES = 3_000_000  # ~3 s at 8 mbit/s
TOLERANCE = 0.25

# A TCP server: answers each of N connections with "pong:<what it got>".
ECHO_SERVER = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1])))
srv.listen(8)
srv.settimeout(60)
for _ in range(int(sys.argv[2])):
    conn, peer = srv.accept()
    conn.settimeout(20)
    data = conn.recv(1000)
    conn.sendall(b"pong:" + data)
    conn.close()
print("served", flush=True)
"""

# A UDP server: echoes N datagrams.
UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(60)
for _ in range(int(sys.argv[2])):
    data, peer = s.recvfrom(1000)
    s.sendto(b"upong:" + data, peer)
"""

# A TCP client: connects (retrying while the server comes up), sends, prints the answer.
CLIENT = r"""
import socket, sys, time
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
deadline = time.monotonic() + 20
while True:
    try:
        sock = socket.create_connection((host, port), timeout=5)
        sock.settimeout(10)
        sock.sendall(payload)
        answer = sock.recv(1000)
        if answer:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit("no answer from %s:%d" % (host, port))
    time.sleep(0.1)
print(answer.decode(), flush=True)
"""

# Bulk sender/receiver for the rate limits: prints JSON with bytes and seconds.
BULK = r"""
import json, socket, sys, time
host, port, mode, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
sock = socket.create_connection((host, port), timeout=10)
sock.settimeout(60)
if mode == "send":
    block = b"x" * 65536
    left = size
    while left > 0:
        sock.sendall(block[: min(left, len(block))])
        left -= min(left, len(block))
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    print(json.dumps({"sent": size}))
else:
    got, first, last = 0, None, None
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        now = time.monotonic()
        first = now if first is None else first
        last = now
        got += len(chunk)
    print(json.dumps({"bytes": got, "seconds": last - first}))
"""


# -- helpers -----------------------------------------------------------------------


def host_links() -> set[str]:
    """Link names in the test's "host" namespace (the session's, see conftest.py)."""
    return {name for _index, name in socket.if_nameindex()}


def python(code: str, *args: str, **options: Any) -> ContainerConfig:
    """A python-template container running ``code``."""
    return ContainerConfig(image=PYTHON, command=["python3", "-c", code, *args], **options)


def busybox(script: str, **options: Any) -> ContainerConfig:
    """A busybox container running ``sh -c script``."""
    return ContainerConfig(image=BUSYBOX, command=["sh", "-c", script], **options)


def wait_for(what: str, check: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_ok(engine: ContainerEngine, config: ContainerConfig) -> str:
    """Run ``config`` attached; it must exit 0; return its stdout."""
    result = engine.containers.run(config)
    assert result.exit_code == 0, (
        f"exit {result.exit_code}: {result.output.decode()} {result.error_output.decode()}"
    )
    return result.output.decode()


def leases(engine: ContainerEngine, network: str = "bridge") -> dict[str, str]:
    """Container id -> leased address on ``network``."""
    return {k: str(v) for k, v in engine._networking.ipam.leases(network).items()}


def proxies() -> list[int]:
    """Live port proxies (of any container)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                if b"codex32._network.portproxy" in f.read():
                    found.append(int(entry))
    return found


def container_links() -> set[str]:
    """Host-side veths and IFBs of containers in the test's host namespace."""
    return {n for n in host_links() if n.startswith(("c32", "i32")) and not n.startswith("c32br")}


@contextlib.contextmanager
def running(engine: ContainerEngine, config: ContainerConfig) -> Iterator[Container]:
    """A detached container, force-removed afterwards whatever happened."""
    container = engine.containers.run_detached(config)
    try:
        yield container
    finally:
        container.remove(force=True)


@contextlib.contextmanager
def network(engine: ContainerEngine, name: str, subnet: str, **options: Any) -> Iterator[str]:
    """A user network, removed afterwards (its bridge with it)."""
    definition = engine.networks.create(name, subnet, **options)
    try:
        yield definition.name
    finally:
        with contextlib.suppress(NetworkError):
            engine.networks.remove(name)


class _Bulk:
    """A host-side TCP peer for the rate tests, in a thread of the test process."""

    def __init__(self, mode: str, size: int) -> None:
        self.mode, self.size = mode, size
        self.server = socket.create_server(("0.0.0.0", 0))
        self.server.settimeout(60)
        self.port = self.server.getsockname()[1]
        self.result: dict[str, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.server.accept()
        conn.settimeout(60)
        with conn:
            if self.mode == "send":
                conn.sendall(b"y" * self.size)
                return
            got, first, last = 0, 0.0, 0.0
            while chunk := conn.recv(1 << 16):
                now = time.monotonic()
                first = first or now
                last = now
                got += len(chunk)
            self.result = {"bytes": got, "seconds": last - first}
            conn.sendall(b"k")

    def close(self) -> None:
        self.thread.join(timeout=60)
        self.server.close()


@pytest.fixture(autouse=True)
def nothing_left(engine: ContainerEngine) -> Iterator[None]:
    """After each test: no container link, proxy or stale lease is left."""
    yield
    wait_for("container links to go", lambda: not container_links())
    wait_for("port proxies to exit", lambda: not proxies())
    known = set(engine._store.ids())
    for definition in engine.networks.list():
        stale = set(leases(engine, definition.name)) - known
        assert not stale, f"leases left on {definition.name}: {stale}"
    user_networks = [n.name for n in engine.networks.list() if n.name != "bridge"]
    assert not user_networks, f"networks left: {user_networks}"
    assert "masquerade" not in current_ruleset()


# -- modes -------------------------------------------------------------------------


def test_bridge_containers_talk_by_address_and_name(engine: ContainerEngine) -> None:
    config = python(ECHO_SERVER, "8000", "3", name="c32t-server")
    with running(engine, config) as server:
        settings = server.network_settings()
        address = str(settings["IPAddress"])
        assert settings["Mode"] == "bridge"
        assert settings["Gateway"] == DEFAULT_GATEWAY
        assert address.startswith("10.88.")
        by_address = run_ok(engine, python(CLIENT, address, "8000", "by-address", auto_remove=True))
        assert by_address.strip() == "pong:by-address"
        by_name = run_ok(engine, busybox("echo by-name | nc c32t-server 8000", auto_remove=True))
        assert by_name.strip() == "pong:by-name"
        # a STRICT container asked onto the bridge: veth into a user-namespaced netns
        strict = python(
            CLIENT, "c32t-server", "8000", "strict", isolation=IsolationType.STRICT,
            network="bridge", auto_remove=True,
        )  # fmt: skip
        assert run_ok(engine, strict).strip() == "pong:strict"
        assert server.wait(timeout=30) == 0
        hosts = run_ok(engine, busybox("cat /etc/hosts", auto_remove=True))
        assert f"{address}\tc32t-server {server.short_id}" in hosts
        route = run_ok(engine, busybox("ip route; cat /proc/net/dev", auto_remove=True))
        assert f"default via {DEFAULT_GATEWAY} dev eth0" in route
        assert "eth0:" in route


def test_strict_container_has_only_loopback(engine: ContainerEngine) -> None:
    out = run_ok(
        engine,
        busybox(
            "tail -n +3 /proc/net/dev | cut -d: -f1; cat /sys/class/net/lo/operstate",
            isolation=IsolationType.STRICT,
            auto_remove=True,
        ),
    )
    lines = [line.strip() for line in out.splitlines()]
    assert lines[:-1] == ["lo"]
    assert lines[-1] in ("unknown", "up")  # lo is up (it reports "unknown" when up)
    config = busybox("true", isolation=IsolationType.STRICT)
    container = engine.containers.create(config)
    try:
        assert container.network_settings() == {"Mode": "none", "Network": "none"}
    finally:
        container.remove()


def test_host_mode_sees_the_hosts_interfaces(engine: ContainerEngine) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="c32thost0", kind="veth", peer={"ifname": "c32thost1"})
    try:
        out = run_ok(
            engine,
            busybox(
                "readlink /proc/self/ns/net; tail -n +3 /proc/net/dev | cut -d: -f1",
                isolation=IsolationType.MINIMAL,
                auto_remove=True,
            ),
        )
        lines = [line.strip() for line in out.splitlines()]
        assert lines[0] == os.readlink("/proc/thread-self/ns/net")
        assert {"lo", "c32thost0", "c32thost1"} <= set(lines[1:])
    finally:
        with IPRoute() as ipr:
            ipr.link("del", index=ipr.link_lookup(ifname="c32thost0")[0])


def test_stats_count_the_containers_own_traffic(engine: ContainerEngine) -> None:
    # stats reads the counters of the container's namespace; a host-mode container has
    # no namespace of its own, and its figures are not the host's (Docker shows none).
    size = 300_000
    peer = _Bulk("send", size)
    script = f"nc {DEFAULT_GATEWAY} {peer.port} > /dev/null; echo got; sleep 1000"
    try:
        with (
            running(engine, busybox(script, name="c32t-netstats")) as bridged,
            running(engine, busybox("sleep 1000", isolation=IsolationType.MINIMAL)) as host_mode,
        ):
            wait_for("the transfer", lambda: b"got" in bridged.logs())
            stats = bridged.stats()
            assert stats.net_rx_bytes >= size, stats
            assert 0 < stats.net_tx_bytes < size, stats
            on_host = host_mode.stats()
            assert (on_host.net_rx_bytes, on_host.net_tx_bytes) == (0, 0), on_host
    finally:
        peer.close()


# -- published ports ---------------------------------------------------------------


def test_published_ports_answer_from_the_host(engine: ContainerEngine) -> None:
    code = (
        "import subprocess, sys\n"
        f"udp = subprocess.Popen([sys.executable, '-c', {UDP_ECHO!r}, '8001', '2'])\n"
        f"exec({ECHO_SERVER!r}, {{'__name__': '__main__'}})\n"
        "udp.wait(timeout=60)\n"
    )
    config = python(code, "8000", "2", ports=["18080:8000", "18081:8001/udp"])
    with running(engine, config) as container:
        assert container.network_settings()["Ports"] == [
            "0.0.0.0:18080->8000/tcp",
            "0.0.0.0:18081->8001/udp",
        ]
        # on 127.0.0.1 and on another address of the host (the bridge's)
        for host in ("127.0.0.1", DEFAULT_GATEWAY):
            answer = _tcp_ask(host, 18080, f"via-{host}".encode())
            assert answer == f"pong:via-{host}".encode()
            assert _udp_ask(host, 18081, b"u") == b"upong:u"
        pid = container.network_settings()["PortProxyPid"]
        assert isinstance(pid, int)
        with open(f"/proc/{pid}/status") as f:
            assert any(line.split()[:2] == ["Uid:", "65534"] for line in f)
    wait_for("the proxy to exit", lambda: not proxies())
    with socket.create_server(("0.0.0.0", 18080)):
        pass  # the port is free again


def test_a_restarted_container_keeps_its_address_and_ports(engine: ContainerEngine) -> None:
    container = engine.containers.create(python(ECHO_SERVER, "8000", "1", ports=["18086:8000"]))
    try:
        address = container.network_settings()["IPAddress"]
        for attempt in ("first", "second"):
            container.start()
            assert _tcp_ask("127.0.0.1", 18086, attempt.encode()) == f"pong:{attempt}".encode()
            assert container.wait(timeout=30) == 0  # served its one connection
            assert container.network_settings()["IPAddress"] == address
    finally:
        container.remove(force=True)


def _tcp_ask(host: str, port: int, payload: bytes) -> bytes:
    """Ask the published port, retrying while the container's server comes up."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                sock.settimeout(10)
                sock.sendall(payload)
                answer = sock.recv(1000)
                if answer:
                    return answer
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"no answer on {host}:{port}")
        time.sleep(0.1)


def _udp_ask(host: str, port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1)
        for _ in range(20):
            sock.sendto(payload, (host, port))
            with contextlib.suppress(TimeoutError):
                return sock.recvfrom(1000)[0]
    pytest.fail(f"no UDP answer on {host}:{port}")


# -- rate limits -------------------------------------------------------------------


def _rate_container(engine: ContainerEngine, peer: _Bulk, mode: str, **limits: str) -> str:
    config = python(BULK, DEFAULT_GATEWAY, str(peer.port), mode, str(BULK_BYTES), **limits)
    container = engine.containers.create(config)
    try:
        settings = container.network_settings()["RateLimits"]
        assert settings == {
            "Egress": limits.get("network_egress_rate"),
            "Ingress": limits.get("network_ingress_rate"),
        }
        container.start()
        assert container.wait(timeout=60) == 0, container.logs().decode()
        return container.logs().decode()
    finally:
        container.remove(force=True)
        peer.close()


def test_egress_limit_is_enforced(engine: ContainerEngine) -> None:
    peer = _Bulk("receive", BULK_BYTES)
    _rate_container(engine, peer, "send", network_egress_rate="8mbit")
    assert peer.result["bytes"] == BULK_BYTES
    rate = peer.result["bytes"] * 8 / peer.result["seconds"]
    print(f"egress: {rate / 1e6:.2f} mbit/s over {peer.result['seconds']:.2f} s")
    assert abs(rate - RATE_BPS) <= TOLERANCE * RATE_BPS, f"{rate / 1e6:.2f} mbit/s"


def test_ingress_limit_is_enforced(engine: ContainerEngine) -> None:
    peer = _Bulk("send", BULK_BYTES)
    out = _rate_container(engine, peer, "receive", network_ingress_rate="8mbit")
    measured = json.loads(out.strip().splitlines()[-1])
    assert measured["bytes"] == BULK_BYTES
    rate = measured["bytes"] * 8 / measured["seconds"]
    print(f"ingress: {rate / 1e6:.2f} mbit/s over {measured['seconds']:.2f} s")
    assert abs(rate - RATE_BPS) <= TOLERANCE * RATE_BPS, f"{rate / 1e6:.2f} mbit/s"


# -- lifecycle ---------------------------------------------------------------------


def test_remove_releases_everything(engine: ContainerEngine) -> None:
    with running(engine, busybox("sleep 60", name="c32t-peer")) as peer:
        config = busybox(
            "sleep 60", name="c32t-leaving", ports=["18082:80"], network_egress_rate="1mbit"
        )
        leaving = engine.containers.run_detached(config)
        settings = leaving.network_settings()
        veth = str(settings["HostInterface"])
        assert {veth, ifb_ifname(veth)} <= container_links()
        assert leaving.id in leases(engine)
        hosts = engine._store.directory(peer.id) / "hosts"
        assert "c32t-leaving" in hosts.read_text()
        leaving.remove(force=True)
        assert leaving.id not in leases(engine)
        assert container_links() == {str(peer.network_settings()["HostInterface"])}
        assert "c32t-leaving" not in hosts.read_text()
        # and the peer sees the update inside, through its bind mount
        seen = peer.exec_run(["cat", "/etc/hosts"]).output.decode()
        assert "c32t-peer" in seen
        assert "c32t-leaving" not in seen
        wait_for("the proxy to exit", lambda: not proxies())


def test_auto_removed_container_releases_its_lease(engine: ContainerEngine) -> None:
    result = engine.containers.run(busybox("true", auto_remove=True, ports=["18083:80"]))
    assert result.exit_code == 0
    wait_for(
        "the monitor to release the lease",
        lambda: (
            result.container_id not in leases(engine)
            and not engine._store.directory(result.container_id).exists()
        ),
    )


def test_an_auto_removed_rate_limited_container_leaves_no_link(engine: ContainerEngine) -> None:
    # Its shaping IFB lives in the host namespace: the monitor (without site-packages)
    # removes it through pyroute2 as it removes the container.
    config = busybox("true", auto_remove=True, network_egress_rate="8mbit")
    result = engine.containers.run(config)
    assert result.exit_code == 0, result
    assert container_links() == set()
    assert result.container_id not in leases(engine)


def test_reconcile_cleans_crashed_containers(engine: ContainerEngine) -> None:
    # a container that died with an egress limit leaves its IFB in the host namespace
    dead = engine.containers.run_detached(busybox("sleep 60", network_egress_rate="2mbit"))
    veth = str(dead.network_settings()["HostInterface"])
    os.kill(dead.record.pid or 0, 9)
    dead.wait(timeout=10)
    assert ifb_ifname(veth) in host_links()
    # a container whose directory vanished without a release (a crash mid-removal)
    lost = engine.containers.create(busybox("true"))
    engine._store.delete(lost.record)
    assert lost.id in leases(engine)
    try:
        engine.reconcile()
        assert ifb_ifname(veth) not in host_links()
        assert lost.id not in leases(engine)
        assert dead.id in leases(engine)  # still exists: keeps its address
    finally:
        dead.remove(force=True)


# -- networks as objects -----------------------------------------------------------


def test_user_network_lifecycle(engine: ContainerEngine) -> None:
    with network(engine, "c32t-net", "10.231.5.0/24") as name:
        bridge = engine.networks.get(name).bridge
        assert bridge in host_links()
        assert name in [n.name for n in engine.networks.list()]
        server = engine.containers.run_detached(
            python(ECHO_SERVER, "8000", "1", name="c32t-onnet", network=name)
        )
        try:
            address = str(server.network_settings()["IPAddress"])
            assert address.startswith("10.231.5.")
            assert engine.networks.inspect(name)["Containers"] == [
                {"Id": server.id, "Name": "c32t-onnet", "IPAddress": address}
            ]
            client = python(CLIENT, "c32t-onnet", "8000", "hi", network=name, auto_remove=True)
            assert run_ok(engine, client).strip() == "pong:hi"
            wait_for("the client's release", lambda: list(leases(engine, name)) == [server.id])
            with pytest.raises(NetworkError, match="in use by 1 container"):
                engine.networks.remove(name)
            # the default network does not see it
            lonely = busybox("cat /etc/hosts", auto_remove=True)
            assert "c32t-onnet" not in run_ok(engine, lonely)
        finally:
            server.remove(force=True)
        # the last container left: the network and its bridge stay
        assert engine.networks.get(name).name == name
        assert bridge in host_links()
        engine.networks.remove(name)
        assert bridge not in host_links()
    with pytest.raises(NetworkError, match="cannot be removed"):
        engine.networks.remove("bridge")


def test_masquerade_network_rules(engine: ContainerEngine) -> None:
    with network(engine, "c32t-nat", "10.231.7.0/24", masquerade=True) as name:
        rules = current_ruleset()
        assert "ip saddr 10.231.7.0/24 ip daddr != 10.231.7.0/24 masquerade" in rules
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            assert f.read().strip() == "1"
        _check_masquerade(engine, name)
        engine.networks.remove(name)
        assert "10.231.7.0/24" not in current_ruleset()


def _check_masquerade(engine: ContainerEngine, name: str) -> None:
    """A container reaches an "outside" namespace, which sees the host's address."""
    from pyroute2 import IPRoute

    with subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", OUTSIDE_SERVER],
        stdout=subprocess.PIPE,
        text=True,
    ) as outside:
        try:
            assert outside.stdout is not None
            assert outside.stdout.readline().strip() == "ready"  # in its namespace now
            ns_fd = os.open(f"/proc/{outside.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                with IPRoute() as ipr:
                    ipr.link(
                        "add", ifname="c32tup0", kind="veth",
                        peer={"ifname": "up1", "net_ns_fd": ns_fd},
                    )  # fmt: skip
                    index = ipr.link_lookup(ifname="c32tup0")[0]
                    ipr.addr("add", index=index, address="192.0.2.1", prefixlen=24)
                    ipr.link("set", index=index, state="up")
            finally:
                os.close(ns_fd)
            client = python(CLIENT, "192.0.2.2", "9000", "out", network=name, auto_remove=True)
            assert run_ok(engine, client).strip() == "pong:192.0.2.1"
            wait_for("the client's release", lambda: not leases(engine, name))
        finally:
            with IPRoute() as ipr:
                for index in ipr.link_lookup(ifname="c32tup0"):
                    ipr.link("del", index=index)
            outside.kill()


# The "outside world": its own namespace, 192.0.2.2, no route back to any container
# subnet; it answers with the address the connection came from.
OUTSIDE_SERVER = r"""
import socket, time
from pyroute2 import IPRoute
print("ready", flush=True)
deadline = time.monotonic() + 20
with IPRoute() as ipr:
    while not ipr.link_lookup(ifname="up1"):
        if time.monotonic() > deadline:
            raise SystemExit("no uplink")
        time.sleep(0.05)
    index = ipr.link_lookup(ifname="up1")[0]
    ipr.addr("add", index=index, address="192.0.2.2", prefixlen=24)
    ipr.link("set", index=index, state="up")
srv = socket.create_server(("192.0.2.2", 9000))
srv.settimeout(60)
conn, peer = srv.accept()
conn.recv(100)
conn.sendall(b"pong:" + peer[0].encode())
conn.close()
"""


# -- bad input: a clear error, nothing half-built -----------------------------------


def test_overlapping_subnets_are_refused(engine: ContainerEngine) -> None:
    before = host_links()
    with network(engine, "c32t-a", "10.231.6.0/24"):
        overlap = r"overlaps subnet 10\.231\.6\.0/24 of network c32t-a"
        with pytest.raises(NetworkError, match=overlap):
            engine.networks.create("c32t-b", "10.231.6.128/25")
        overlap = r"overlaps subnet 10\.88\.0\.0/16 of network bridge"
        with pytest.raises(NetworkError, match=overlap):
            engine.networks.create("c32t-c", "10.88.200.0/24")
        assert [n.name for n in engine.networks.list()] == ["bridge", "c32t-a"]
    assert host_links() == before


def test_exhausted_subnet_is_refused(engine: ContainerEngine, storage_dir: Path) -> None:
    with network(engine, "c32t-tiny", "10.231.8.0/30") as name:  # gateway + 1 address
        first = engine.containers.create(busybox("true", network=name))
        try:
            before = snapshot(storage_dir)
            with pytest.raises(NetworkError, match="no free address left in network c32t-tiny"):
                engine.containers.create(busybox("true", network=name, name="c32t-second"))
            assert snapshot(storage_dir) == before
            assert list(leases(engine, name)) == [first.id]
        finally:
            first.remove()


def test_a_port_already_published_is_refused(engine: ContainerEngine, storage_dir: Path) -> None:
    with running(engine, busybox("sleep 60", ports=["18084:80"], name="c32t-holder")):
        before = snapshot(storage_dir)
        taken = busybox("true", ports=["127.0.0.1:18084:81"])
        with pytest.raises(NetworkError, match="already published by container c32t-holder"):
            engine.containers.create(taken)
        assert snapshot(storage_dir) == before
    # a port held by some other program on the host: refused at start, cleanly
    before = snapshot(storage_dir)
    with socket.create_server(("127.0.0.1", 18085)):
        before_links = container_links()
        with pytest.raises(LaunchError, match="already in use on the host") as failure:
            engine.containers.run(busybox("true", ports=["127.0.0.1:18085:80"], auto_remove=True))
        assert failure.value.step == "network.ports"
        assert container_links() == before_links  # the veth made before was removed
        assert not proxies()
    wait_for("the failed container to go", lambda: snapshot(storage_dir) == before)


def test_a_missing_network_is_refused(engine: ContainerEngine, storage_dir: Path) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(NetworkError, match="network c32t-nowhere does not exist"):
        engine.containers.create(busybox("true", network="c32t-nowhere"))
    assert snapshot(storage_dir) == before
    with pytest.raises(NetworkError, match="does not exist"):
        engine.networks.remove("c32t-nowhere")


# -- CLI -----------------------------------------------------------------------------


def test_network_commands(storage_dir: Path) -> None:
    env = dict(os.environ, CODEX32_STORAGE_DIR=str(storage_dir))
    codex32 = [str(Path(sys.executable).with_name("codex32"))]

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*codex32, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert (result.returncode == 0) == ok, result.stdout + result.stderr
        return result

    assert cli("network", "create", "c32t-cli", "--subnet", "10.231.9.0/24").stdout == "c32t-cli\n"
    try:
        listing = cli("network", "ls").stdout
        assert "c32t-cli" in listing
        assert "10.231.9.0/24" in listing
        out = cli("run", "--rm", "--network", "c32t-cli", "busybox", "ip", "addr").stdout
        assert "inet 10.231.9." in out
        inspected = json.loads(cli("network", "inspect", "c32t-cli").stdout)
        assert inspected[0]["Subnet"] == "10.231.9.0/24"
        failed = cli("run", "--rm", "-p", "80:80", "--network", "host", "busybox", ok=False)
        assert "need a bridge network" in failed.stderr
        assert "cannot be removed" in cli("network", "rm", "bridge", ok=False).stderr
    finally:
        cli("network", "rm", "c32t-cli")
    assert "c32t-cli" not in cli("network", "ls").stdout

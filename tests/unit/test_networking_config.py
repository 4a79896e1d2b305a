"""Networking without root: config validation, profiles, plans, hosts files, endpoints.

The kernel-facing half (bridges, veths, tc, the proxy, nftables) is in
``tests/integration/test_networking.py``; everything here is data and files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from codex32 import ContainerConfig, IsolationType, PortMapping
from codex32._images.image import ImageConfig
from codex32._linux.nftables import MasqueradedNetwork, masquerade_ruleset
from codex32._network.endpoint import ENDPOINT_FILE, Endpoint
from codex32._network.etc_files import (
    FALLBACK_NAMESERVERS,
    HostEntry,
    names_for,
    render_hosts,
    render_network_hosts,
    render_resolv_conf,
    write_in_place,
)
from codex32._network.manager import Networking
from codex32._plan.plan import ContainerPaths, build_plan
from codex32._plan.profiles import resolve_profile
from codex32._store.state import ContainerRecord, StateStore, process_start_time
from codex32.config.network import format_rate, parse_rate
from codex32.errors import NetworkError

TEMPLATE = ImageConfig(
    command=("sh",),
    env={},
    workdir="/",
    binds=(),
    writable=(),
)
PATHS = ContainerPaths(rootfs="/s/rootfs", upper="/s/upper", work="/s/work", lower=("/t",))


def config(**kwargs: object) -> ContainerConfig:
    return ContainerConfig(image="t", **kwargs)


# -- ports and rates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("8080:80", PortMapping(host_port=8080, container_port=80)),
        ("8080:80/udp", PortMapping(host_port=8080, container_port=80, protocol="udp")),
        (
            "127.0.0.1:8080:80/TCP",
            PortMapping(host_ip="127.0.0.1", host_port=8080, container_port=80),
        ),
        (":53:53/udp", PortMapping(host_port=53, container_port=53, protocol="udp")),
    ],
)
def test_port_parse(spec: str, expected: PortMapping) -> None:
    assert PortMapping.parse(spec) == expected


def test_port_defaults_to_every_host_address() -> None:
    assert PortMapping.parse("80:80").host_ip == "0.0.0.0"
    assert PortMapping.parse("8080:80/udp").describe() == "0.0.0.0:8080->80/udp"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("80", "HOSTPORT:CONTAINERPORT"),
        ("a:b:c:d", "HOSTPORT:CONTAINERPORT"),
        ("80:80/sctp", "use tcp or udp"),
        ("8000-8010:80", "ranges"),
        ("0:80", "greater than or equal to 1"),
        ("70000:80", "less than or equal to 65535"),
        ("300.1.1.1:80:80", "not an IPv4 address"),
        ("::1:80:80", "HOSTPORT:CONTAINERPORT"),
        ("224.0.0.1:80:80", "cannot accept"),
    ],
)
def test_port_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PortMapping.parse(spec)


def test_port_conflicts() -> None:
    wildcard = PortMapping.parse("8080:80")
    assert wildcard.conflicts_with(PortMapping.parse("127.0.0.1:8080:81"))
    assert not wildcard.conflicts_with(PortMapping.parse("8080:80/udp"))
    assert not PortMapping.parse("127.0.0.1:8080:80").conflicts_with(
        PortMapping.parse("127.0.0.2:8080:80")
    )


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("10mbit", 10_000_000),
        ("8MBIT", 8_000_000),
        ("1.5gbit", 1_500_000_000),
        ("500kbit", 500_000),
        ("1mibit", 1_048_576),
        ("1mbps", 8_000_000),  # tc: bps units are bytes per second
        ("64000", 64_000),
        (64000, 64_000),
    ],
)
def test_parse_rate(text: str | int, bits: int) -> None:
    assert parse_rate(text) == bits


@pytest.mark.parametrize(
    ("text", "message"),
    [("fast", "invalid rate"), ("10 mb", "invalid"), ("1bit", "out of range"),
     ("40gbit", "out of range")],
)  # fmt: skip
def test_parse_rate_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rate(text)


def test_format_rate() -> None:
    assert [format_rate(b) for b in (8_000_000, 1_500_000, 2_000_000_000, 1001)] == [
        "8mbit", "1500kbit", "2gbit", "1001bit",
    ]  # fmt: skip


# -- the config model ------------------------------------------------------------------


def test_network_fields_and_defaults() -> None:
    c = config(ports=["8080:80"], network_egress_rate="8mbit", network_ingress_rate=1_000_000)
    assert c.network is None
    assert c.ports == [PortMapping(host_port=8080, container_port=80)]
    assert (c.network_egress_rate, c.network_ingress_rate) == (8_000_000, 1_000_000)
    assert config(network="loopback").network == "none"
    assert config(network="my-net.1").network == "my-net.1"
    stored = c.model_dump(mode="json")
    assert ContainerConfig.model_validate(stored) == c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": "container:other"}, "not supported"),
        ({"network": "bad name"}, "invalid network"),
        ({"network": "-x"}, "invalid network"),
        ({"network": "host", "ports": ["80:80"]}, "published ports need a bridge network"),
        ({"isolation": "minimal", "ports": ["80:80"]}, "network is 'host'"),
        ({"isolation": "strict", "ports": ["80:80"]}, "only a loopback interface"),
        ({"network": "none", "network_egress_rate": "1mbit"}, "rate limits need a bridge"),
        ({"ports": ["80:80", "127.0.0.1:80:81"]}, "use the same host port"),
        ({"network_ingress_rate": "lots"}, "invalid rate"),
    ],
)
def test_network_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**kwargs)


def test_strict_may_ask_for_a_bridge() -> None:
    c = config(isolation="strict", network="bridge", ports=["80:80"])
    assert c.ports[0].host_port == 80


# -- profiles and plans ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("isolation", "network", "resolved", "has_net"),
    [
        ("minimal", None, "host", False),
        ("standard", None, "bridge", True),
        ("strict", None, "none", True),
        ("minimal", "bridge", "bridge", True),
        ("standard", "host", "host", False),
        ("strict", "mynet", "mynet", True),
    ],
)
def test_profile_network(isolation: str, network: str | None, resolved: str, has_net: bool) -> None:
    profile = resolve_profile(config(isolation=isolation, network=network))
    assert profile.network == resolved
    assert ("net" in profile.namespaces) is has_net
    if has_net and "cgroup" in profile.namespaces:  # cgroup last: unshared after placing
        assert profile.namespaces.index("net") < profile.namespaces.index("cgroup")
    if "user" in profile.namespaces:
        assert profile.namespaces[0] == "user"


def test_plan_binds_network_files_read_only_before_volumes(tmp_path: Path) -> None:
    c = config(volumes=[{"source": str(tmp_path), "target": "/data"}])
    files = (("/c/hosts", "/etc/hosts"), ("/c/resolv.conf", "/etc/resolv.conf"))
    plan = build_plan("c", c, resolve_profile(c), TEMPLATE, PATHS, hostname="h",
                      network_files=files)  # fmt: skip
    binds = [s for s in plan.steps if s["op"] == "bind"]
    assert [(b["source"], b["target"], b["read_only"]) for b in binds] == [
        ("/c/hosts", "/etc/hosts", True),
        ("/c/resolv.conf", "/etc/resolv.conf", True),
        (str(tmp_path), "/data", False),
    ]


# -- hosts and resolv.conf -----------------------------------------------------------------


def test_render_hosts() -> None:
    own = HostEntry("10.88.0.2", names_for("web", "a" * 64, "web-host"))
    peers = [HostEntry("10.88.0.3", names_for("db", "b" * 64))]
    text = render_hosts(own, peers, "bridge")
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert f"10.88.0.2\tweb-host web {'a' * 12}\n" in text
    assert f"# other containers on network bridge\n10.88.0.3\tdb {'b' * 12}\n" in text
    assert names_for("x", "c" * 64, "x") == ("x", "c" * 12)  # no duplicate names


@pytest.mark.parametrize("count", [1, 2, 7])
def test_render_network_hosts_is_render_hosts_for_each_member(count: int) -> None:
    """The O(N) refresh writes exactly what rendering each file alone would."""
    members = []
    for i in range(count):
        cid = f"{i:x}" * 64
        name = ["web", "db", "cache", "web2", "a", "zz", "db"][i]  # a duplicate name too
        hostname = "shared-host" if i % 2 else None
        address = f"10.88.0.{i + 2}"
        members.append((cid, HostEntry(address, names_for(name, cid[:64], hostname)),
                        HostEntry(address, names_for(name, cid[:64]))))  # fmt: skip
    texts = dict(render_network_hosts(members, "bridge"))
    assert set(texts) == {m[0] for m in members}
    for key, own, _peer in members:
        peers = [p for k, _o, p in members if k != key]
        assert texts[key] == render_hosts(own, peers, "bridge")


def test_resolv_conf_drops_loopback_resolvers() -> None:
    host = "search example.org\nnameserver 127.0.0.53\nnameserver 192.0.2.53\noptions edns0\n"
    assert render_resolv_conf(host) == "search example.org\nnameserver 192.0.2.53\noptions edns0\n"
    stub = "nameserver 127.0.0.53\nsearch lan\n"
    upstream = "nameserver 192.0.2.1\nnameserver ::1\n"
    assert render_resolv_conf(stub, upstream) == "search lan\nnameserver 192.0.2.1\n"
    fallback = render_resolv_conf(stub, None)
    assert [f"nameserver {a}" in fallback for a in FALLBACK_NAMESERVERS] == [True, True]
    assert "127.0.0.53" not in fallback


def test_write_in_place_keeps_the_inode(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    write_in_place(path, "a long first version\n")
    inode = path.stat().st_ino
    write_in_place(path, "short\n")
    assert path.read_text() == "short\n"
    assert path.stat().st_ino == inode
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(FileNotFoundError):
        write_in_place(tmp_path / "gone", "x", create=False)


# -- masquerade rules ----------------------------------------------------------------------


def test_masquerade_ruleset() -> None:
    empty = masquerade_ruleset([])
    assert empty == "table ip codex32 {}\ndelete table ip codex32\n"
    text = masquerade_ruleset([MasqueradedNetwork("b", "10.2.0.0/24"),
                               MasqueradedNetwork("a", "10.1.0.0/16")])  # fmt: skip
    assert text.startswith(empty)
    assert "type nat hook postrouting priority srcnat" in text
    lines = [line.strip() for line in text.splitlines() if "masquerade" in line]
    assert lines == [
        'ip saddr 10.1.0.0/16 ip daddr != 10.1.0.0/16 masquerade comment "a"',
        'ip saddr 10.2.0.0/24 ip daddr != 10.2.0.0/24 masquerade comment "b"',
    ]
    with pytest.raises(ValueError):
        masquerade_ruleset([MasqueradedNetwork("a", "10.1.0.1/16")])


# -- endpoints: leases, files, hosts of peers (no kernel) ------------------------------------


@pytest.fixture
def networking(tmp_path: Path) -> Networking:
    store = StateStore(tmp_path)
    store.ensure_layout()
    return Networking(tmp_path, store)


def _make(networking: Networking, cid: str, name: str, **kwargs: object) -> ContainerConfig:
    networking._store.directory(cid).mkdir()
    networking._store.save(ContainerRecord(cid, name, "t"))
    c = config(name=name, **kwargs)
    network = resolve_profile(c).network
    networking.prepare(cid, name, name, c, network)
    return c


def test_bridged_containers_get_leases_and_see_each_other(networking: Networking) -> None:
    a, b = "a" * 64, "b" * 64
    _make(networking, a, "alpha", ports=["8080:80"], network_egress_rate="1mbit")
    _make(networking, b, "beta")
    store = networking._store
    endpoint = networking.endpoint(a)
    assert endpoint is not None
    assert (endpoint.address, endpoint.gateway, endpoint.bridge) == (
        "10.88.0.2/16", "10.88.0.1", "codex32-br0",
    )  # fmt: skip
    assert endpoint.ifname_host == "c32" + a[:12]
    assert endpoint.egress_bps == 1_000_000
    hosts_a = (store.directory(a) / "hosts").read_text()
    assert f"10.88.0.2\talpha {a[:12]}" in hosts_a
    assert f"10.88.0.3\tbeta {b[:12]}" in hosts_a
    assert "nameserver" in (store.directory(a) / "resolv.conf").read_text()
    assert networking.files(a, "bridge") == (
        (str(store.directory(a) / "hosts"), "/etc/hosts"),
        (str(store.directory(a) / "resolv.conf"), "/etc/resolv.conf"),
    )
    inode = (store.directory(a) / "hosts").stat().st_ino
    networking.release(b)
    assert list(networking.ipam.leases("bridge")) == [a]
    assert "beta" not in (store.directory(a) / "hosts").read_text()
    assert (store.directory(a) / "hosts").stat().st_ino == inode  # rewritten in place
    assert not (store.directory(b) / ENDPOINT_FILE).exists()
    networking.release(b)  # idempotent


def test_host_and_none_modes(networking: Networking) -> None:
    h, n = "1" * 64, "2" * 64
    _make(networking, h, "onhost", isolation=IsolationType.MINIMAL)
    _make(networking, n, "alone", isolation=IsolationType.STRICT)
    store = networking._store
    assert networking.endpoint(h) is None
    assert networking.ipam.leases("bridge") == {}
    with open("/etc/hosts") as f:
        assert (store.directory(h) / "hosts").read_text() == f.read()
    assert "127.0.1.1\talone" in (store.directory(n) / "hosts").read_text()
    assert [t for _, t in networking.files(n, "none")] == ["/etc/hosts"]
    assert networking.settings(n, config(isolation="strict")) == {
        "Mode": "none",
        "Network": "none",
    }


def test_missing_network_and_held_port_are_refused(networking: Networking) -> None:
    with pytest.raises(NetworkError, match="network nowhere does not exist"):
        _make(networking, "3" * 64, "lost", network="nowhere")
    assert networking.ipam.leases("bridge") == {}
    holder = "4" * 64
    _make(networking, holder, "holder", ports=["8080:80"])
    endpoint = networking.endpoint(holder)
    assert endpoint is not None
    # pretend its proxy runs: this very process, by pid and start time
    endpoint.proxy_pid, endpoint.proxy_start_time = os.getpid(), process_start_time(os.getpid())
    (networking._store.directory(holder) / ENDPOINT_FILE).write_text(json.dumps(endpoint.__dict__))
    with pytest.raises(NetworkError, match="already published by container holder"):
        _make(networking, "5" * 64, "second", ports=["127.0.0.1:8080:81"])
    assert list(networking.ipam.leases("bridge")) == [holder]
    _make(networking, "6" * 64, "third", ports=["8080:80/udp"])  # another protocol is fine


def test_reconcile_frees_leases_of_vanished_containers(networking: Networking) -> None:
    keep, vanish = "7" * 64, "8" * 64
    for cid, name in ((keep, "keep"), (vanish, "vanish")):
        _make(networking, cid, name)
    networking._store.delete(networking._store.load(vanish))
    assert networking.reconcile() == [vanish]
    assert list(networking.ipam.leases("bridge")) == [keep]
    assert "vanish" not in (networking._store.directory(keep) / "hosts").read_text()


def test_endpoint_round_trip() -> None:
    endpoint = Endpoint("n", "x", "x", "10.0.0.2/24", "10.0.0.1", "br", "c32x")
    assert Endpoint.from_json({**endpoint.__dict__, "future_field": 1}) == endpoint
    assert endpoint.ip == "10.0.0.2"


def test_a_refresh_beside_the_launch_is_done_once_waited_for(networking: Networking) -> None:
    """The engine's create refreshes the peers on a thread; attach or release waits."""
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    _make(networking, a, "alpha")
    for cid, name in ((b, "beta"), (c, "gamma")):
        networking._store.directory(cid).mkdir()
        networking._store.save(ContainerRecord(cid, name, "t"))
        conf = config(name=name)
        networking.prepare(cid, name, name, conf, "bridge", background_refresh=True)
    networking._refreshed(b)
    networking.release(c)  # waits for its refresh first, then takes it out again
    hosts_a = (networking._store.directory(a) / "hosts").read_text()
    assert "beta" in hosts_a and "gamma" not in hosts_a
    assert "alpha" in (networking._store.directory(b) / "hosts").read_text()
    assert not networking._refreshing


def test_load_endpoint_rereads_a_rewritten_file_and_hands_out_copies(
    networking: Networking,
) -> None:
    from codex32._network.endpoint import load_endpoint

    a = "a" * 64
    _make(networking, a, "alpha", ports=["8080:80"])
    store = networking._store
    first = load_endpoint(store, a)
    assert first is not None and first.proxy_pid is None
    first.ports.clear()  # a caller's change to its copy...
    again = load_endpoint(store, a)
    assert again is not None and again.ports  # ...is not what the next caller gets
    again.proxy_pid = 4242
    networking._save(a, again)  # rewritten whole, as the engine does
    assert load_endpoint(store, a) == again
    (store.directory(a) / ENDPOINT_FILE).unlink()
    assert load_endpoint(store, a) is None


def test_parsed_endpoints_of_released_containers_are_forgotten(networking: Networking) -> None:
    """The engine keeps the endpoints it parsed for hosts refreshes; one released by
    another process (an --rm monitor) goes at the network's next refresh."""
    from codex32._network import endpoint as endpoint_module

    a, b = "a" * 64, "b" * 64
    _make(networking, a, "alpha")
    _make(networking, b, "beta")  # its refresh parsed both
    cached = {os.path.basename(os.path.dirname(p)) for p in endpoint_module._parsed}
    assert {a, b} <= cached
    other = endpoint_module.EndpointFiles(networking._store.root, networking._store)
    other.ipam.release("bridge", b)  # (as a monitor does, in its own process)
    networking._files.refresh_hosts("bridge")
    cached = {os.path.basename(os.path.dirname(p)) for p in endpoint_module._parsed}
    assert a in cached and b not in cached


def test_hosts_refreshes_coalesce_but_never_across_a_reboot(networking: Networking) -> None:
    """A refresh that began after a change already wrote it; a stamp of another boot
    (or a garbled one) never stands in for a refresh."""
    from codex32._network import endpoint as endpoint_module

    a, b = "a" * 64, "b" * 64
    _make(networking, a, "alpha")
    _make(networking, b, "beta")
    hosts_a = networking._store.directory(a) / "hosts"
    stamp = networking.directory / ".hosts-bridge.refreshed"
    assert stamp.exists()
    files = endpoint_module.EndpointFiles(networking.directory.parent, networking._store)

    def refresh_after(stamp_text: str) -> bool:
        hosts_a.write_text("stale\n")
        stamp.write_text(stamp_text)
        files.refresh_hosts("bridge")
        return hosts_a.read_text() != "stale\n"

    boot, _, now = endpoint_module._now().partition(" ")
    future = f"{boot} {int(now) + 10**12}"
    assert not refresh_after(future), "a refresh that began later covers this change"
    assert refresh_after(f"{boot} 0"), "an older refresh does not"
    assert refresh_after(f"another-boot {int(now) + 10**12}"), "nor one of another boot"
    assert refresh_after("garbage"), "nor a garbled stamp"
    assert "beta" in hosts_a.read_text()

"""IPAM: networks and address leases in a JSON store, without root or a kernel."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codex32._network.ipam import (
    DEFAULT_BRIDGE,
    DEFAULT_NETWORK_NAME,
    DEFAULT_SUBNET,
    IPAM,
    NetworkDefinition,
    default_bridge_name,
)
from codex32.errors import NetworkError


@pytest.fixture
def ipam(tmp_path: Path) -> IPAM:
    return IPAM(tmp_path / "networks")


def test_default_network_exists_without_creation(ipam: IPAM) -> None:
    default = ipam.get_network(DEFAULT_NETWORK_NAME)
    assert default == NetworkDefinition(
        name="bridge", subnet=DEFAULT_SUBNET, gateway="10.88.0.1", bridge=DEFAULT_BRIDGE
    )
    assert default.gateway_cidr == "10.88.0.1/16"
    assert [n.name for n in ipam.list_networks()] == ["bridge"]
    with pytest.raises(NetworkError, match="cannot be removed"):
        ipam.remove_network("bridge")


def test_default_subnet_is_configurable(tmp_path: Path) -> None:
    store = IPAM(tmp_path, default_subnet="172.30.0.0/24", default_bridge="c32test0")
    lease = store.allocate("bridge", "c1")
    assert str(lease.address) == "172.30.0.2"
    assert lease.cidr == "172.30.0.2/24"
    assert store.get_network("bridge").bridge == "c32test0"


def test_allocate_gives_distinct_addresses_skipping_gateway(ipam: IPAM) -> None:
    ipam.create_network("small", "10.50.0.0/29", gateway="10.50.0.3")
    got = [ipam.allocate("small", f"c{i}") for i in range(5)]
    addresses = [str(lease.address) for lease in got]
    assert addresses == ["10.50.0.1", "10.50.0.2", "10.50.0.4", "10.50.0.5", "10.50.0.6"]
    assert all(lease.prefixlen == 29 for lease in got)
    assert all(str(lease.gateway) == "10.50.0.3" for lease in got)
    # asking again for the same container returns its lease, not a second one
    assert ipam.allocate("small", "c2") == got[2]
    assert ipam.lease_of("small", "c2") == got[2]
    assert ipam.lease_of("small", "nobody") is None


def test_exhaustion_is_a_clear_error_and_release_frees(ipam: IPAM) -> None:
    ipam.create_network("tiny", "10.60.0.0/30")  # .1 gateway, .2 the only host
    first = ipam.allocate("tiny", "c1")
    assert str(first.address) == "10.60.0.2"
    with pytest.raises(NetworkError, match="no free address left in network tiny") as exc:
        ipam.allocate("tiny", "c2")
    assert exc.value.container == "c2"
    assert exc.value.hint and "larger subnet" in exc.value.hint
    assert ipam.leases("tiny") == {"c1": ipaddress.IPv4Address("10.60.0.2")}

    assert ipam.release("tiny", "c1") is True
    assert ipam.release("tiny", "c1") is False  # idempotent
    assert ipam.release("no-such-network", "c1") is False
    assert str(ipam.allocate("tiny", "c2").address) == "10.60.0.2"


def test_released_address_is_reused_only_after_the_rest(ipam: IPAM) -> None:
    ipam.create_network("ring", "10.70.0.0/29")  # hosts .2-.6 for containers
    for i in range(3):
        ipam.allocate("ring", f"c{i}")  # .2 .3 .4
    ipam.release("ring", "c0")  # .2 free again
    follow = [str(ipam.allocate("ring", f"n{i}").address) for i in range(3)]
    assert follow == ["10.70.0.5", "10.70.0.6", "10.70.0.2"]
    leased = [str(a) for a in ipam.leases("ring").values()]
    assert len(leased) == len(set(leased)) == 5


def test_leases_persist_across_instances(tmp_path: Path) -> None:
    one = IPAM(tmp_path)
    one.create_network("keep", "10.80.0.0/24", masquerade=True)
    lease = one.allocate("keep", "abc")
    two = IPAM(tmp_path)
    assert two.get_network("keep").masquerade is True
    assert two.lease_of("keep", "abc") == lease
    assert two.allocate("keep", "def").address != lease.address
    data = json.loads((tmp_path / "leases" / "keep.json").read_text())
    assert data["leases"] == {"abc": "10.80.0.2", "def": "10.80.0.3"}
    assert not [p for p in tmp_path.rglob(".*.json.*")], "temp files left behind"


def test_overlapping_subnets_are_refused(ipam: IPAM) -> None:
    ipam.create_network("a", "10.90.0.0/24")
    with pytest.raises(NetworkError, match=r"overlaps subnet 10\.90\.0\.0/24 of network a"):
        ipam.create_network("b", "10.90.0.128/25")
    with pytest.raises(NetworkError, match="overlaps"):
        ipam.create_network("c", "10.0.0.0/8")  # contains both a and the default
    with pytest.raises(NetworkError, match="network bridge"):
        ipam.create_network("d", "10.88.5.0/24")  # inside the default network
    with pytest.raises(NetworkError, match="already exists"):
        ipam.create_network("a", "10.91.0.0/24")
    with pytest.raises(NetworkError, match="already used"):
        ipam.create_network("e", "10.92.0.0/24", bridge=default_bridge_name("a"))
    assert [n.name for n in ipam.list_networks()] == ["bridge", "a"]


@pytest.mark.parametrize(
    ("name", "subnet", "gateway", "message"),
    [
        ("bad name", "10.1.0.0/24", None, "invalid network name"),
        ("ok", "10.1.0.1/24", None, "invalid subnet"),
        ("ok", "not-a-subnet", None, "invalid subnet"),
        ("ok", "10.1.0.0/31", None, "too small"),
        ("ok", "10.1.0.0/24", "10.2.0.1", "not a host address"),
        ("ok", "10.1.0.0/24", "10.1.0.255", "not a host address"),
    ],
)
def test_bad_definitions_are_refused(
    ipam: IPAM, name: str, subnet: str, gateway: str | None, message: str
) -> None:
    with pytest.raises(NetworkError, match=message):
        ipam.create_network(name, subnet, gateway=gateway)
    assert not (ipam.directory / "networks.json").exists()


def test_remove_network_refused_while_in_use(ipam: IPAM) -> None:
    made = ipam.create_network("busy", "10.93.0.0/24")
    assert made.bridge == default_bridge_name("busy") and len(made.bridge) <= 15
    ipam.allocate("busy", "c1")
    with pytest.raises(NetworkError, match="in use by 1 container"):
        ipam.remove_network("busy")
    ipam.release("busy", "c1")
    assert ipam.remove_network("busy") == made
    with pytest.raises(NetworkError, match="does not exist"):
        ipam.get_network("busy")
    with pytest.raises(NetworkError, match="does not exist"):
        ipam.allocate("busy", "c1")
    # a re-created network starts with a clean lease table
    ipam.create_network("busy", "10.94.0.0/24")
    assert ipam.leases("busy") == {}


def test_corrupt_store_is_reported(ipam: IPAM) -> None:
    ipam.directory.mkdir(parents=True)
    (ipam.directory / "networks.json").write_text("{not json")
    with pytest.raises(NetworkError, match="cannot read the IPAM store"):
        ipam.list_networks()


_WORKER = textwrap.dedent(
    """
    import json, sys
    from codex32._network.ipam import IPAM
    directory, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    got = [str(IPAM(directory).allocate("race", f"{tag}-{i}").address) for i in range(count)]
    print(json.dumps(got))
    """
)


def test_concurrent_processes_never_share_an_address(tmp_path: Path) -> None:
    IPAM(tmp_path).create_network("race", "10.95.0.0/23")
    count = 100
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(tmp_path), tag, str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p", "q")
    ]
    results: list[list[str]] = []
    for proc in workers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    p_addresses, q_addresses = (set(r) for r in results)
    assert len(p_addresses) == len(q_addresses) == count
    assert not p_addresses & q_addresses
    stored = IPAM(tmp_path).leases("race")
    assert len(stored) == 2 * count
    assert {str(a) for a in stored.values()} == p_addresses | q_addresses

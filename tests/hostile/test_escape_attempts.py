"""Escape attempts from STANDARD and STRICT containers: each test fails if it works.

``escape_probe.py`` runs every attack inside one container per level (each in a
forked child) and reports; the host side listens on its own 127.0.0.1 for the
network ones and checks its hostname after. The ones ``test_runtime_isolation.py``
and ``test_seccomp_kernel.py`` already cover from other angles (capability sets,
masked paths, the filter on its own) are tried here as an attacker would try them.
An attack not contained yet would be listed in ``PENDING`` as a strict xfail; none is.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import host_tmpdir, output_of
from lifecycle_support import eventually

from codex32 import ContainerConfig, ContainerEngine, IsolationType, Volume

pytestmark = pytest.mark.root

PROBE = Path(__file__).with_name("escape_probe.py")
LEVELS = (IsolationType.STANDARD, IsolationType.STRICT)


def _root_disk() -> str:
    dev = os.stat("/").st_dev
    entry = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if entry.exists() and (entry.resolve() / "partition").exists():
        entry = entry.resolve().parent
    return (entry / "dev").read_text().strip() if (entry / "dev").exists() else ""


ATTACKS = [
    "mount", "umount", "pivot_root", "unshare_mnt", "unshare_user", "setns", "kcore",
    "sysrq", "proc_sys", "core_pattern", "sys_write", "self_exe", "release_agent",
    "mknod_kmsg", "mknod_block", "dev_mem", "dev_kmsg", "modules", "kexec", "bpf",
    "perf_event_open", "userfaultfd", "io_uring", "keyctl", "ptrace_outside", "clock",
    "hostname", "syslog", "open_by_handle", "swapon", "raw_socket", "host_loopback",
    "host_gateway", "leaked_descriptors",
]  # fmt: skip

#: (attack, level) -> why it is not contained yet (strict xfail: flips when fixed).
PENDING: dict[tuple[str, IsolationType], str] = {}


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A service on the host's own 127.0.0.1 that no container may reach."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture(scope="module")
def reports(engine: ContainerEngine, listener: int) -> dict[IsolationType, dict[str, Any]]:
    hostname = socket.gethostname()
    found: dict[IsolationType, dict[str, Any]] = {}
    with host_tmpdir() as probe_dir:
        (probe_dir / "probe.py").write_text(PROBE.read_text())
        for level in LEVELS:
            config = ContainerConfig(
                image="python", isolation=level, auto_remove=True,
                command=["python3", "/probe/probe.py", str(os.getpid()), str(listener),
                         _root_disk()],
                volumes=[Volume(source=str(probe_dir), target="/probe", read_only=True)],
            )  # fmt: skip
            found[level] = json.loads(output_of(engine, config))
    assert socket.gethostname() == hostname, "a container changed the host's hostname"
    return found


def _cases() -> list[Any]:
    cases = []
    for level in LEVELS:
        for attack in ATTACKS:
            reason = PENDING.get((attack, level))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            cases.append(pytest.param(level, attack, id=f"{level.value}-{attack}", marks=marks))
    return cases


@pytest.mark.parametrize(("level", "attack"), _cases())
def test_escape_is_contained(
    level: IsolationType, attack: str, reports: dict[IsolationType, dict[str, Any]]
) -> None:
    result = reports[level][attack]
    assert result["contained"], f"{attack} from {level.value}: {result['detail']}"


def test_raw_sockets_stay_in_the_containers_network(
    reports: dict[IsolationType, dict[str, Any]],
) -> None:
    """STANDARD keeps Docker's CAP_NET_RAW, but only in a network namespace of its own."""
    host_netns = os.readlink("/proc/thread-self/ns/net")
    detail = reports[IsolationType.STANDARD]["raw_socket"]["detail"]
    assert host_netns not in detail, detail
    assert "raw socket" not in reports[IsolationType.STRICT]["raw_socket"]["detail"]


def test_a_container_cannot_reach_an_unpublished_port_on_another_network(
    engine: ContainerEngine,
) -> None:
    """A server on one user network, an attacker on another (and on the default
    bridge): the server's unpublished port answers neither, while a peer on its own
    network reaches it (so the probe can tell)."""
    server_cmd = "while true; do echo pong | nc -l -p 8000; done"
    attack = "nc -w 2 {ip} 8000 </dev/null && echo REACHED || echo refused"
    engine.networks.create("c32h-a", "10.231.61.0/24")
    engine.networks.create("c32h-b", "10.231.62.0/24")
    server = None
    try:
        server = engine.containers.run_detached(ContainerConfig(
            image="busybox", network="c32h-a", command=["sh", "-c", server_cmd]))  # fmt: skip
        ip = str(server.network_settings()["IPAddress"])
        listening = "cat /proc/net/tcp* | grep -q ':1F40 '"  # port 8000 in LISTEN, seen from inside
        assert eventually(lambda: server.exec_run(["sh", "-c", listening]).exit_code == 0, 10)
        for network, expected in (("c32h-a", "pong"), ("c32h-b", "refused"),
                                  ("bridge", "refused")):  # fmt: skip
            out = output_of(engine, ContainerConfig(
                image="busybox", network=network, auto_remove=True,
                command=["sh", "-c", attack.format(ip=ip)]))  # fmt: skip
            assert expected in out and ("REACHED" not in out or expected == "pong"), (network, out)
    finally:
        if server is not None:
            server.remove(force=True)
        for name in ("c32h-a", "c32h-b"):
            engine.networks.remove(name)

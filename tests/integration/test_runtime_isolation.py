"""What each isolation level enforces, read from inside real containers.

One container per level prints its namespaces, its capability sets, no_new_privs,
seccomp mode, id maps, network devices and hostname; the tests compare that with the
host's view (the test process) and with the table in ``codex32._plan.profiles``. The
expected capability masks are computed from ``codex32.config.capabilities``. Capability changes,
host-side uid checks and the masked / read-only kernel paths use containers of their
own. Nothing here writes to anything the host shares with a MINIMAL container.
"""

from __future__ import annotations

import os
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    EROFS_TEXT,
    LEVELS,
    NAMESPACES,
    cap_mask,
    facts,
    host_namespaces,
    host_status,
    host_tmpdir,
    mountinfo,
    output_of,
    processes_running,
    sh,
    status_fields,
)

from codex32 import ContainerConfig, ContainerEngine, IsolationType, RunResult, Volume
from codex32._plan.profiles import READONLY_PATHS
from codex32.config.capabilities import (
    ALL_CAPABILITIES,
    CAPABILITY_NUMBERS,
    DOCKER_DEFAULT_CAPABILITIES,
    HOST_DANGEROUS_CAPABILITIES,
)

pytestmark = pytest.mark.root

MINIMAL, STANDARD, STRICT = LEVELS

# Everything one container reports about itself; parsed by ``Probe``.
PROBE = r"""
for n in pid mnt uts ipc net cgroup user time; do echo "ns_$n=$(readlink /proc/self/ns/$n)"; done
echo "uid_map=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
echo "gid_map=$(cat /proc/self/gid_map | tr -s ' ' | sed 's/^ //')"
echo "net_devices=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ',')"
echo "lo_flags=$(ip -o link show lo | cut -d'<' -f2 | cut -d'>' -f1)"
echo "self_pid=$$"
echo "hostname=$(hostname)"
echo "--- status"
cat /proc/self/status
echo "--- mountinfo"
cat /proc/self/mountinfo
"""

_EXPECTED_NEW_NAMESPACES: dict[IsolationType, frozenset[str]] = {
    MINIMAL: frozenset({"pid", "mnt"}),
    STANDARD: frozenset({"pid", "mnt", "uts", "ipc", "net", "cgroup"}),
    STRICT: frozenset(NAMESPACES),
}


class Probe:
    """What one container at one level said about itself."""

    def __init__(self, result: RunResult) -> None:
        text = result.output.decode()
        head, _, rest = text.partition("--- status\n")
        status, _, mounts = rest.partition("--- mountinfo\n")
        self.container_id = result.container_id
        self.facts = facts(head)
        self.status = status_fields(status)
        self.mounts = mountinfo(mounts)

    def cap(self, name: str) -> int:
        return int(self.status[name], 16)


@pytest.fixture(scope="module")
def probes(engine: ContainerEngine) -> dict[IsolationType, Probe]:
    """One container per level, run once for the module."""
    found: dict[IsolationType, Probe] = {}
    for level in LEVELS:
        result = engine.containers.run(sh(PROBE, isolation=level))
        assert result.exit_code == 0, result.error_output.decode()
        found[level] = Probe(result)
    return found


def _host_bounding_set() -> int:
    return int(host_status()["CapBnd"], 16)


# -- namespaces ------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_namespaces_differ_from_the_host_as_the_level_says(
    probes: dict[IsolationType, Probe], level: IsolationType
) -> None:
    host = host_namespaces()
    inside = {name: probes[level].facts[f"ns_{name}"] for name in NAMESPACES}
    assert all(inside.values()), inside
    new = {name for name in NAMESPACES if inside[name] != host[name]}
    assert new == _EXPECTED_NEW_NAMESPACES[level], f"inside {inside}, host {host}"


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_the_command_is_pid_1_of_its_pid_namespace(
    probes: dict[IsolationType, Probe], level: IsolationType
) -> None:
    assert probes[level].facts["self_pid"] == "1"


# -- privileges ------------------------------------------------------------------


def test_minimal_keeps_host_root_minus_the_dangerous_capabilities(
    probes: dict[IsolationType, Probe],
) -> None:
    probe = probes[MINIMAL]
    kept = frozenset(ALL_CAPABILITIES) - HOST_DANGEROUS_CAPABILITIES
    expected = cap_mask(kept) & _host_bounding_set()
    assert probe.cap("CapEff") == expected, hex(probe.cap("CapEff"))
    assert probe.cap("CapPrm") == expected
    assert probe.cap("CapBnd") == expected
    assert probe.cap("CapInh") == 0
    assert probe.cap("CapAmb") == 0
    for name in HOST_DANGEROUS_CAPABILITIES:
        assert not probe.cap("CapBnd") & (1 << CAPABILITY_NUMBERS[name]), name
    assert probe.status["NoNewPrivs"] == "0"
    assert probe.status["Seccomp"] == "0"


def test_standard_has_dockers_default_capabilities(
    probes: dict[IsolationType, Probe],
) -> None:
    probe = probes[STANDARD]
    assert cap_mask(DOCKER_DEFAULT_CAPABILITIES) == 0xA80425FB
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert probe.cap(field) == 0xA80425FB, f"{field}={probe.status[field]}"
    assert probe.cap("CapInh") == 0
    assert probe.cap("CapAmb") == 0
    assert probe.status["NoNewPrivs"] == "1"
    assert probe.status["Seccomp"] == "2"  # filter mode


def test_strict_has_no_capabilities(probes: dict[IsolationType, Probe]) -> None:
    probe = probes[STRICT]
    for field in ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"):
        assert probe.cap(field) == 0, f"{field}={probe.status[field]}"
    assert probe.status["NoNewPrivs"] == "1"
    assert probe.status["Seccomp"] == "2"


# Taking lo down is only tried in a network namespace of the container's own: never
# on the host's loopback, whatever the capabilities turn out to be.
CAP_SCRIPT = r"""
grep -E '^(CapEff|CapBnd)' /proc/self/status | tr -d '\t' | sed 's/:/=/'
touch /tmp/owned && chown 1000:1000 /tmp/owned 2>/dev/null && echo chown=ok || echo chown=denied
if [ "$(readlink /proc/self/ns/net)" != "HOST_NET" ]; then
    ip link set lo down 2>/dev/null && echo lo_down=ok || echo lo_down=denied
fi
"""


def _cap_script() -> str:
    return CAP_SCRIPT.replace("HOST_NET", host_namespaces()["net"])


def _caps_of(engine: ContainerEngine, config: ContainerConfig) -> dict[str, str]:
    return facts(output_of(engine, config))


def _bit(name: str) -> int:
    return 1 << CAPABILITY_NUMBERS[name]


def test_standard_without_cap_changes_cannot_admin_the_network(
    engine: ContainerEngine,
) -> None:
    found = _caps_of(engine, sh(_cap_script()))
    assert found["chown"] == "ok"
    assert found["lo_down"] == "denied"


def test_cap_drop_removes_a_capability(engine: ContainerEngine) -> None:
    found = _caps_of(engine, sh(_cap_script(), cap_drop=["CHOWN"]))
    assert int(found["CapEff"], 16) == 0xA80425FB & ~_bit("CAP_CHOWN")
    assert int(found["CapBnd"], 16) == 0xA80425FB & ~_bit("CAP_CHOWN")
    assert found["chown"] == "denied"


def test_cap_add_grants_a_capability(engine: ContainerEngine) -> None:
    found = _caps_of(engine, sh(_cap_script(), cap_add=["NET_ADMIN"]))
    assert int(found["CapEff"], 16) == 0xA80425FB | _bit("CAP_NET_ADMIN")
    assert found["lo_down"] == "ok"  # in the container's own network namespace


def test_cap_drop_all_then_add_one(engine: ContainerEngine) -> None:
    found = _caps_of(engine, sh(_cap_script(), cap_drop=["ALL"], cap_add=["cap_net_bind_service"]))
    assert int(found["CapEff"], 16) == _bit("CAP_NET_BIND_SERVICE")
    assert int(found["CapBnd"], 16) == _bit("CAP_NET_BIND_SERVICE")
    assert found["chown"] == "denied"


def test_minimal_cap_drop_all_leaves_nothing(engine: ContainerEngine) -> None:
    found = _caps_of(engine, sh(_cap_script(), isolation=MINIMAL, cap_drop=["ALL"]))
    assert int(found["CapEff"], 16) == 0
    assert int(found["CapBnd"], 16) == 0
    assert found["chown"] == "denied"


def test_strict_cap_add_works_inside_the_user_namespace(engine: ContainerEngine) -> None:
    found = _caps_of(engine, sh(_cap_script(), isolation=STRICT, cap_add=["CHOWN"]))
    assert int(found["CapEff"], 16) == _bit("CAP_CHOWN")
    assert found["chown"] == "ok"  # uid 1000 is mapped into the container's range


def test_a_non_root_user_has_no_effective_capabilities(engine: ContainerEngine) -> None:
    found = _caps_of(engine, sh(_cap_script(), user="bot"))
    assert int(found["CapEff"], 16) == 0
    assert int(found["CapBnd"], 16) == 0xA80425FB


# -- user namespace --------------------------------------------------------------


@pytest.mark.parametrize("level", [MINIMAL, STANDARD], ids=lambda lv: lv.value)
def test_without_user_namespace_ids_are_the_hosts(
    probes: dict[IsolationType, Probe], level: IsolationType
) -> None:
    assert probes[level].facts["uid_map"] == "0 0 4294967295"
    assert probes[level].facts["gid_map"] == "0 0 4294967295"


def test_strict_maps_root_to_the_unprivileged_base(
    probes: dict[IsolationType, Probe], engine: ContainerEngine
) -> None:
    base, size = engine.settings.userns_uid_base, engine.settings.userns_size
    assert base > 0
    assert probes[STRICT].facts["uid_map"] == f"0 {base} {size}"
    assert probes[STRICT].facts["gid_map"] == f"0 {base} {size}"


@pytest.fixture
def host_dir() -> Iterator[Path]:
    with host_tmpdir() as path:
        yield path


def test_strict_root_writes_files_as_the_base_uid_on_the_host(
    engine: ContainerEngine, host_dir: Path
) -> None:
    base = engine.settings.userns_uid_base
    os.chown(host_dir, base, base)
    out = output_of(
        engine,
        sh(
            "echo hi > /v/by-root && mkdir /v/dir && stat -c 'owner=%u:%g' /v/by-root",
            isolation=STRICT,
            volumes=[Volume(source=str(host_dir), target="/v")],
        ),
    )
    assert facts(out)["owner"] == "0:0"  # root inside ...
    st = (host_dir / "by-root").stat()
    assert (st.st_uid, st.st_gid) == (base, base)  # ... the base uid outside
    assert (host_dir / "dir").stat().st_uid == base


def test_strict_user_1000_is_base_plus_1000_on_the_host(
    engine: ContainerEngine, host_dir: Path
) -> None:
    base = engine.settings.userns_uid_base
    os.chmod(host_dir, 0o777)
    output_of(
        engine,
        sh(
            "echo hi > /v/by-bot",
            isolation=STRICT,
            user="1000:1000",
            volumes=[Volume(source=str(host_dir), target="/v")],
        ),
    )
    st = (host_dir / "by-bot").stat()
    assert (st.st_uid, st.st_gid) == (base + 1000, base + 1000)


def test_standard_root_is_host_root(engine: ContainerEngine, host_dir: Path) -> None:
    output_of(engine, sh("echo hi > /v/f", volumes=[Volume(source=str(host_dir), target="/v")]))
    st = (host_dir / "f").stat()
    assert (st.st_uid, st.st_gid) == (0, 0)


def _wait_for_process(argv: list[str], timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = processes_running(argv)
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no process {argv} appeared")


def test_strict_process_runs_as_the_base_uid_seen_from_the_host(
    engine: ContainerEngine,
) -> None:
    """Read the running container's /proc/PID/status from the host side."""
    base = engine.settings.userns_uid_base
    argv = ["sleep", f"{secrets.randbelow(10**6) + 1000}.5"]  # unique on this machine
    config = ContainerConfig(image="busybox", command=argv, isolation=STRICT, auto_remove=True)
    results: list[RunResult] = []
    runner = threading.Thread(target=lambda: results.append(engine.containers.run(config)))
    runner.start()
    try:
        pid = _wait_for_process(argv)
        with open(f"/proc/{pid}/status") as f:
            status = status_fields(f.read())
        user_ns = os.readlink(f"/proc/{pid}/ns/user")
    finally:
        for candidate in processes_running(argv):
            os.kill(candidate, signal.SIGKILL)
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert status["Uid"].split() == [str(base)] * 4
    assert status["Gid"].split() == [str(base)] * 4
    assert int(status["CapEff"], 16) == 0
    assert user_ns != os.readlink("/proc/self/ns/user")
    assert results and results[0].exit_code == 128 + signal.SIGKILL


# -- network ---------------------------------------------------------------------


@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_network_devices_and_loopback_up(
    probes: dict[IsolationType, Probe], level: IsolationType
) -> None:
    # STANDARD joins the default bridge network (eth0); STRICT is loopback only
    # (docs/networking.md; tests/integration/test_networking.py has the rest).
    expected = "eth0,lo," if level is STANDARD else "lo,"
    assert probes[level].facts["net_devices"] == expected
    assert "UP" in probes[level].facts["lo_flags"].split(",")


# -- hostname --------------------------------------------------------------------


@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_default_hostname_is_the_short_container_id(
    probes: dict[IsolationType, Probe], level: IsolationType
) -> None:
    probe = probes[level]
    assert probe.facts["hostname"] == probe.container_id[:12]
    assert probe.facts["hostname"] != os.uname().nodename


# -- masked and read-only kernel paths ---------------------------------------------

MASK_SCRIPT = r"""
for f in keys timer_list interrupts kcore; do
    # head -c: an unmasked /proc/kcore is as large as the address space.
    if [ -e /proc/$f ]; then echo "size_$f=$(head -c 16 /proc/$f 2>/dev/null | wc -c)"; fi
done
echo "acpi_entries=$(ls -A /proc/acpi 2>/dev/null | wc -l)"
# Written only in a uts namespace of the container's own: never the host's hostname.
if [ "$(readlink /proc/self/ns/uts)" != "HOST_UTS" ]; then
    echo "proc_sys=$( (echo probe > /proc/sys/kernel/hostname) 2>&1 )"
fi
echo "proc_sys_hostname=$(cat /proc/sys/kernel/hostname)"
echo "--- mountinfo"
cat /proc/self/mountinfo
"""


def _masks(engine: ContainerEngine, level: IsolationType) -> tuple[dict[str, str], str]:
    script = MASK_SCRIPT.replace("HOST_UTS", host_namespaces()["uts"])
    out = output_of(engine, sh(script, isolation=level))
    head, _, mounts = out.partition("--- mountinfo\n")
    return facts(head), mounts


@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_masked_proc_paths_read_empty(engine: ContainerEngine, level: IsolationType) -> None:
    found, mounts = _masks(engine, level)
    for name in ("keys", "timer_list", "interrupts", "kcore"):
        if os.path.exists(f"/proc/{name}"):
            assert found[f"size_{name}"] == "0", f"/proc/{name} is not masked"
    assert found["acpi_entries"] == "0"
    acpi = mountinfo(mounts)["/proc/acpi"]  # an empty read-only tmpfs over it
    assert acpi.fstype == "tmpfs"
    assert "ro" in acpi.options


@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_proc_sys_is_read_only(engine: ContainerEngine, level: IsolationType) -> None:
    # Only probed where the uts namespace is the container's own: were /proc/sys
    # writable, the write would change nothing but the container's hostname.
    found, mounts = _masks(engine, level)
    assert EROFS_TEXT in found["proc_sys"]
    assert found["proc_sys_hostname"] != "probe"
    assert "ro" in mountinfo(mounts)["/proc/sys"].options


def test_minimal_proc_sys_is_read_only(probes: dict[IsolationType, Probe]) -> None:
    """MINIMAL shares the host's uts and net namespaces and keeps CAP_SYS_ADMIN: a
    writable /proc/sys would rewrite the host's sysctls. Read from mountinfo only,
    never tried: a write that got through would change the host."""
    mounts = probes[MINIMAL].mounts
    proc_sys = mounts["/proc/sys"]
    assert proc_sys.fstype == "proc"
    assert "ro" in proc_sys.options
    for path in READONLY_PATHS:  # its siblings, where this kernel has them
        if path in mounts:
            assert "ro" in mounts[path].options, path
    assert "rw" in mounts["/proc"].options  # the rest of /proc is the container's own


def test_minimal_does_not_mask_proc(engine: ContainerEngine) -> None:
    """The control: the probe above tells a masked file from an unmasked one."""
    script = "echo size_timer_list=$(wc -c < /proc/timer_list)"
    assert int(facts(output_of(engine, sh(script, isolation=MINIMAL)))["size_timer_list"]) > 0


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_sys_is_read_only(engine: ContainerEngine, level: IsolationType) -> None:
    script = (
        'echo "sysfs=$(mkdir /sys/codex32-probe 2>&1)"; echo --- mountinfo; '
        "cat /proc/self/mountinfo"
    )
    head, _, mounts = output_of(engine, sh(script, isolation=level)).partition("--- mountinfo\n")
    assert EROFS_TEXT in facts(head)["sysfs"]
    sys_mount = mountinfo(mounts)["/sys"]
    assert "ro" in sys_mount.options
    assert sys_mount.fstype == "sysfs"

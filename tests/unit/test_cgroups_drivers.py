"""The v1 and v2 drivers and host detection, on a tmp dir laid out like /sys/fs/cgroup.

``KernelLikeFS`` plays the kernel's part that a plain directory cannot: a new cgroup
directory gets its control files, cgroup.procs and subtree_control keep sets, the
v1 cpuset refuses tasks until cpus/mems are set, memsw must stay >= memory, v2
enables controllers only in a cgroup without processes, freezing reports through
freezer.state / cgroup.events.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from codex32._cgroups import driver as driver_module
from codex32._cgroups import v1 as v1_module
from codex32._cgroups import v2 as v2_module
from codex32._cgroups._fs import CgroupFS, cgroup_mounts, host_path, own_cgroups
from codex32._cgroups.detect import detect_driver, host_info
from codex32._cgroups.driver import THROTTLES, CgroupDriver, cpu_quota_us
from codex32._cgroups.v1 import V1Driver
from codex32._cgroups.v2 import V2Driver, blkio_to_io_weight, shares_to_weight
from codex32.config.container import ResourceLimits
from codex32.errors import CgroupError

MEMSW = "memory.memsw.limit_in_bytes"
THROTTLE_FIELDS = list(THROTTLES)
UNLIMITED = "9223372036854771712"
V1_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "-1", "cpu.shares": "1024"},
    "cpuacct": {"cpuacct.usage": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "memory": {
        "memory.limit_in_bytes": UNLIMITED,
        "memory.memsw.limit_in_bytes": UNLIMITED,
        "memory.soft_limit_in_bytes": UNLIMITED,
        "memory.usage_in_bytes": "0",
        "memory.max_usage_in_bytes": "0",
        "memory.failcnt": "0",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {
        "blkio.bfq.weight": "100",
        "blkio.throttle.io_service_bytes_recursive": "Total 0",
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.write_bps_device": "",
        "blkio.throttle.read_iops_device": "",
        "blkio.throttle.write_iops_device": "",
    },
    "devices": {},
}
V2_FILES: dict[str, dict[str, str]] = {
    "cpu": {"cpu.max": "max 100000", "cpu.weight": "100"},
    "cpuset": {"cpuset.cpus": "", "cpuset.cpus.effective": "0-1"},
    "io": {"io.weight": "default 100", "io.max": ""},
    "memory": {
        "memory.max": "max",
        "memory.swap.max": "max",
        "memory.low": "0",
        "memory.current": "0",
        "memory.peak": "0",
        "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "0"},
}


class KernelLikeFS(CgroupFS):
    """CgroupFS over a tmp dir that behaves like cgroupfs where the drivers rely on it."""

    def __init__(self, v1: dict[str, frozenset[str]], v2: str | None) -> None:
        self.v1 = v1  # mountpoint -> controllers
        self.v2 = v2  # cgroup2 mountpoint
        self.freezing_rounds = 0  # how many FROZEN writes read back FREEZING first
        self.writes: list[tuple[str, str]] = []

    def _v1_controllers(self, path: str) -> frozenset[str] | None:
        for mountpoint, controllers in self.v1.items():
            if path.startswith(mountpoint + "/"):
                return controllers
        return None

    def mkdir(self, path: str, step: str) -> None:
        super().mkdir(path, step)
        files = {"cgroup.procs": ""}
        controllers = self._v1_controllers(path)
        if controllers is not None:
            for controller in controllers:
                files.update(V1_FILES[controller])
        else:
            parent = Path(path).parent
            enabled = (parent / "cgroup.subtree_control").read_text().split()
            files.update(
                {
                    "cgroup.controllers": " ".join(enabled),
                    "cgroup.subtree_control": "",
                    "cgroup.type": "domain",
                    "cgroup.events": "populated 0\nfrozen 0\n",
                    "cgroup.freeze": "0",
                    "cgroup.kill": "",
                    "cpu.stat": "usage_usec 0\n",
                    "io.stat": "",
                }
            )
            for controller in enabled:
                files.update(V2_FILES[controller])
        for name, value in files.items():
            Path(path, name).write_text(value)

    def rmdir(self, path: str) -> None:
        if Path(path, "cgroup.procs").exists() and Path(path, "cgroup.procs").read_text():
            raise OSError(errno.EBUSY, "busy", path)
        if self.subdirs(path):
            raise OSError(errno.ENOTEMPTY, "not empty", path)
        for entry in Path(path).iterdir():
            entry.unlink()
        os.rmdir(path)

    def write(self, path: str, value: str, step: str) -> None:
        file = Path(path)
        name = file.name
        self.writes.append((path, value))
        if name == "cgroup.procs":
            cpus = file.with_name("cpuset.cpus")
            if self._v1_controllers(path) and cpus.exists() and not _text(cpus):
                raise CgroupError("cpuset empty", step=step, path=path, errno=errno.ENOSPC)
            pids = file.read_text().split()
            value = "\n".join([*pids, value]) + "\n"
        elif name == "cgroup.subtree_control":
            has_procs = bool(_text(file.with_name("cgroup.procs")))
            if has_procs and file.with_name("cgroup.type").exists():
                raise CgroupError("internal process", step=step, path=path, errno=errno.EBUSY)
            enabled = file.read_text().split()
            value = " ".join([*enabled, value.removeprefix("+")])
        elif name == "memory.limit_in_bytes" and file.with_name(MEMSW).exists():
            if int(value) > int(_text(file.with_name("memory.memsw.limit_in_bytes"))):
                raise CgroupError("above memsw", step=step, path=path, errno=errno.EINVAL)
        elif name == "memory.memsw.limit_in_bytes":
            memsw = UNLIMITED if value == "-1" else value
            if int(memsw) < int(_text(file.with_name("memory.limit_in_bytes"))):
                raise CgroupError("below memory", step=step, path=path, errno=errno.EINVAL)
            value = memsw
        elif name == "freezer.state" and value == "FROZEN" and self.freezing_rounds > 0:
            self.freezing_rounds -= 1
            value = "FREEZING"
        elif name == "cgroup.freeze":
            file.with_name("cgroup.events").write_text(f"populated 1\nfrozen {value}\n")
        elif name == "cgroup.kill":
            file.with_name("cgroup.procs").write_text("")
        super().write(path, value, step)


def _text(path: Path) -> str:
    return path.read_text().strip()


def _mountinfo(lines: list[tuple[str, str, str]], path: Path) -> str:
    """(fstype, mountpoint, super options) -> a mountinfo file."""
    text = "23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw\n"
    for number, (fstype, mountpoint, options) in enumerate(lines, start=30):
        text += f"{number} 23 0:{number} / {mountpoint} rw,relatime - {fstype} {fstype} {options}\n"
    path.write_text(text)
    return str(path)


V1_SET = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


class Host:
    """A fake host: mountinfo, /proc/self/cgroup and a KernelLikeFS over tmp_path."""

    def __init__(
        self,
        tmp_path: Path,
        layout: str,
        own_memory: str = "/process_api/abc",
        stray_v1: str | None = None,
    ) -> None:
        root = tmp_path / "cgroup"
        root.mkdir()
        mounts: list[tuple[str, str, str]] = []
        proc: list[str] = []
        v1: dict[str, frozenset[str]] = {}
        v2: str | None = None
        if layout in ("v1", "hybrid", "comount"):
            sets: list[tuple[str, ...]] = [("cpu", "cpuacct")]
            if layout != "comount":
                sets = [("cpu",), ("cpuacct",)]
            sets += [(c,) for c in V1_SET if c not in ("cpu", "cpuacct")]
            for number, controllers in enumerate(sets, start=1):
                mountpoint = root / ",".join(controllers)
                mountpoint.mkdir()
                mounts.append(("cgroup", str(mountpoint), "rw," + ",".join(controllers)))
                own = own_memory if controllers == ("memory",) else "/"
                proc.append(f"{number}:{','.join(controllers)}:{own}")
                v1[str(mountpoint)] = frozenset(controllers)
                for controller in controllers:
                    for name, value in V1_FILES[controller].items():
                        root_value = {"cpuset.cpus": "0-1", "cpuset.mems": "0"}.get(name, value)
                        (mountpoint / name).write_text(root_value)
                (mountpoint / "cgroup.procs").write_text("1\n")
                own_dir = mountpoint / own.strip("/")
                if own != "/":
                    own_dir.mkdir(parents=True)
                    for name in ("cgroup.procs", *V1_FILES[controllers[0]]):
                        (own_dir / name).write_text((mountpoint / name).read_text())
            mounts.append(("cgroup", str(root / "systemd"), "rw,name=systemd"))
            (root / "systemd").mkdir()
            proc.append(f"{len(sets) + 1}:name=systemd:/")
        if layout in ("hybrid", "v2"):
            mountpoint = root / "unified" if layout == "hybrid" else root
            mountpoint.mkdir(exist_ok=True)
            mounts.append(("cgroup2", str(mountpoint), "rw,nsdelegate"))
            offered = "hugetlb" if layout == "hybrid" else "cpuset cpu io memory hugetlb pids"
            (mountpoint / "cgroup.controllers").write_text(offered)
            (mountpoint / "cgroup.subtree_control").write_text("")
            (mountpoint / "cgroup.procs").write_text("1\n2\n")
            (mountpoint / "cgroup.events").write_text("populated 1\n")
            proc.append("0::/")
            v2 = str(mountpoint)
        if stray_v1 is not None:  # a v1 hierarchy of a controller the engine does not use
            mountpoint = root / stray_v1
            mountpoint.mkdir()
            mounts.append(("cgroup", str(mountpoint), f"rw,{stray_v1}"))
            proc.append(f"{len(proc) + 1}:{stray_v1}:/")
        self.root = root
        self.mountinfo = _mountinfo(mounts, tmp_path / "mountinfo")
        self.proc_cgroup = str(tmp_path / "cgroup.self")
        Path(self.proc_cgroup).write_text("\n".join(proc) + "\n")
        self.fs = KernelLikeFS(v1, v2)

    def v1(self, parent: str = "codex32") -> V1Driver:
        return V1Driver(
            parent, mountinfo=self.mountinfo, proc_cgroup=self.proc_cgroup, fs=self.fs, timeout=0.2
        )

    def v2(self, parent: str = "codex32") -> V2Driver:
        return V2Driver(
            parent, mountinfo=self.mountinfo, proc_cgroup=self.proc_cgroup, fs=self.fs, timeout=0.2
        )

    def all_dirs(self) -> set[str]:
        return {str(p) for p in self.root.rglob("*") if p.is_dir()}


# -- host discovery ------------------------------------------------------------------


def test_mountinfo_parsing_keeps_controllers_root_and_escapes(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "35 31 0:32 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n"
        "42 31 0:39 / /proc rw - proc proc rw\n"
    )
    mounts = cgroup_mounts(str(info))
    assert [(m.fstype, m.mountpoint, m.root) for m in mounts] == [
        ("cgroup", "/sys/fs/cgroup/cpu,cpuacct", "/docker/x"),
        ("cgroup", "/sys/fs/cgroup/systemd", "/"),
        ("cgroup2", "/mnt/with space", "/"),
    ]
    assert mounts[0].controllers == {"cpu", "cpuacct"}
    assert mounts[1].controllers == frozenset()  # a named hierarchy is no controller
    # Inside a container the mount shows /docker/x: our cgroup maps below it ...
    assert host_path(mounts[0], "/docker/x/sub") == "/sys/fs/cgroup/cpu,cpuacct/sub"
    assert host_path(mounts[0], "/docker/x") == "/sys/fs/cgroup/cpu,cpuacct"
    # ... and a cgroup outside it is unreachable, which is an error, not a guess.
    with pytest.raises(CgroupError, match="outside the part of the hierarchy"):
        host_path(mounts[0], "/other")


def test_own_cgroups_keys_hierarchies_by_controller_list(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:memory:/process_api/abc\n2:cpu,cpuacct:/\n1:name=systemd:/\n0::/x\n")
    assert own_cgroups(str(proc)) == {
        "memory": "/process_api/abc",
        "cpu,cpuacct": "/",
        "name=systemd": "/",
        "": "/x",
    }


@pytest.mark.parametrize(
    ("layout", "expected_layout", "driver_type"),
    [("v1", "v1", V1Driver), ("hybrid", "hybrid", V1Driver), ("v2", "v2", V2Driver)],
)
def test_detection_by_layout(
    tmp_path: Path, layout: str, expected_layout: str, driver_type: type
) -> None:
    host = Host(tmp_path, layout)
    info = host_info(host.mountinfo, host.proc_cgroup)
    assert info.layout == expected_layout
    driver = detect_driver(mountinfo=host.mountinfo, proc_cgroup=host.proc_cgroup, fs=host.fs)
    assert isinstance(driver, driver_type)
    if layout == "hybrid":
        # The development hosts: all controllers on v1, only hugetlb on the v2 tree.
        assert info.v2_controllers == ("hugetlb",)
        assert set(info.v1_controllers) == set(V1_SET)
        assert "driver: v1" in info.describe()
    if layout == "v2":
        assert info.v1_controllers == ()
        assert "memory" in info.v2_controllers
        assert driver.controllers() == {"cpu", "cpuset", "io", "memory", "pids"}


def test_a_stray_v1_hierarchy_does_not_hide_a_v2_host(tmp_path: Path) -> None:
    host = Host(tmp_path, "v2", stray_v1="net_cls")
    info = host_info(host.mountinfo, host.proc_cgroup)
    assert (info.layout, info.driver, info.v1_controllers) == ("hybrid", "v2", ("net_cls",))
    driver = detect_driver(mountinfo=host.mountinfo, proc_cgroup=host.proc_cgroup, fs=host.fs)
    assert isinstance(driver, V2Driver)
    assert "memory" in driver.controllers()


def test_detection_without_cgroups_says_so(tmp_path: Path) -> None:
    host = Host(tmp_path, "none")
    info = host_info(host.mountinfo, host.proc_cgroup)
    assert (info.layout, info.driver) == ("none", None)
    assert "rlimits" in info.describe()
    with pytest.raises(CgroupError, match="no cgroup hierarchy is mounted"):
        detect_driver(mountinfo=host.mountinfo, proc_cgroup=host.proc_cgroup)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "cgroup.procs", "x\ny"])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    driver = Host(tmp_path, "v1").v1()
    with pytest.raises(CgroupError, match="cgroup name"):
        driver.create(name)


@pytest.mark.parametrize("parent", ["", "..", "a/../b", "./a", "cgroup.x"])
def test_bad_parents_are_refused(tmp_path: Path, parent: str) -> None:
    host = Host(tmp_path, "v1")
    with pytest.raises(CgroupError, match="cgroup parent"):
        host.v1(parent)


def test_cpu_quota() -> None:
    assert cpu_quota_us(0.5) == 50_000
    assert cpu_quota_us(1.5) == 150_000
    assert cpu_quota_us(0.01) == 1_000


# -- v1 ------------------------------------------------------------------------------


def test_v1_creates_beneath_own_cgroup_in_every_hierarchy(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    driver = host.v1("engine/codex32")
    group = driver.create("c1")
    root = host.root
    assert group.paths["memory"] == f"{root}/memory/process_api/abc/engine/codex32/c1"
    assert group.paths["cpu"] == f"{root}/cpu/engine/codex32/c1"
    assert set(group.paths) == set(V1_SET)
    # cpuset: every new level copied cpus and mems from its parent, or no task could join.
    for level in ("engine", "engine/codex32", "engine/codex32/c1"):
        assert _text(root / "cpuset" / level / "cpuset.cpus") == "0-1"
        assert _text(root / "cpuset" / level / "cpuset.mems") == "0"
    group.add_pid(4242)
    for path in set(group.paths.values()):
        assert _text(Path(path, "cgroup.procs")) == "4242"
    assert driver.names() == ["c1"]
    assert driver.open("c1").paths == group.paths


def test_v1_comounted_hierarchy_gets_one_directory(tmp_path: Path) -> None:
    host = Host(tmp_path, "comount")
    group = host.v1().create("c1")
    assert group.paths["cpu"] == group.paths["cpuacct"] == f"{host.root}/cpu,cpuacct/codex32/c1"


def test_v1_refuses_to_adopt_an_existing_cgroup_and_rolls_back(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    driver = host.v1()
    driver.create("c1")
    before = host.all_dirs()
    # Only the pids hierarchy has a stray "c2": create must fail and leave nothing.
    host.fs.mkdir(f"{host.root}/pids/codex32/c2", "test")
    with pytest.raises(CgroupError, match="already exists") as caught:
        driver.create("c2")
    assert caught.value.errno == errno.EEXIST
    assert host.all_dirs() == before | {f"{host.root}/pids/codex32/c2"}


def test_v1_apply_writes_each_limit_to_its_file(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    group.apply(
        ResourceLimits(
            cpus=0.5,
            cpu_shares=512,
            cpuset_cpus="1",
            memory_bytes="64m",
            memory_swap_bytes="128m",
            memory_reservation_bytes="32m",
            pids_limit=10,
            blkio_weight=300,
        )
    )
    paths = group.paths

    def read(controller: str, name: str) -> str:
        return _text(Path(paths[controller], name))

    assert read("cpu", "cpu.cfs_period_us") == "100000"
    assert read("cpu", "cpu.cfs_quota_us") == "50000"
    assert read("cpu", "cpu.shares") == "512"
    assert read("cpuset", "cpuset.cpus") == "1"
    assert read("memory", "memory.limit_in_bytes") == str(64 << 20)
    assert read("memory", "memory.memsw.limit_in_bytes") == str(128 << 20)
    assert read("memory", "memory.soft_limit_in_bytes") == str(32 << 20)
    assert read("pids", "pids.max") == "10"
    # No CFQ blkio.weight on this kernel: BFQ's file takes the same range.
    assert read("blkio", "blkio.bfq.weight") == "300"


def test_v1_memory_and_swap_keep_their_order_when_raised_and_lowered(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    memory = Path(group.paths["memory"])
    for mem, swap in (("64m", "64m"), ("256m", "512m"), ("32m", "32m")):
        group.apply(ResourceLimits(memory_bytes=mem, memory_swap_bytes=swap))
        assert _text(memory / "memory.limit_in_bytes") == str(
            ResourceLimits(memory_bytes=mem).memory_bytes
        )
    group.apply(ResourceLimits(memory_bytes="32m", memory_swap_bytes=-1))
    assert _text(memory / "memory.memsw.limit_in_bytes") == UNLIMITED


def test_v1_unenforceable_limits_are_errors_naming_the_file(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    os.unlink(Path(group.paths["memory"], "memory.memsw.limit_in_bytes"))
    with pytest.raises(CgroupError, match=r"memory\.memsw\.limit_in_bytes does not exist"):
        group.apply(ResourceLimits(memory_bytes="64m", memory_swap_bytes="128m"))
    os.unlink(Path(group.paths["blkio"], "blkio.bfq.weight"))
    with pytest.raises(CgroupError, match=r"blkio\.weight does not exist") as caught:
        group.apply(ResourceLimits(blkio_weight=500))
    assert caught.value.step == "apply"
    assert caught.value.errno == errno.ENOENT


def test_v1_missing_controller_is_an_error(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    text = Path(host.mountinfo).read_text().splitlines()
    Path(host.mountinfo).write_text("\n".join(line for line in text if "/pids " not in line))
    group = host.v1().create("c1")
    assert "pids" not in group.paths
    with pytest.raises(CgroupError, match="pids controller is not mounted"):
        group.apply(ResourceLimits(pids_limit=5))


def test_v1_freeze_waits_through_freezing(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    host.fs.freezing_rounds = 2
    group.freeze()
    assert group.is_frozen()
    writes = [value for path, value in host.fs.writes if path.endswith("freezer.state")]
    assert writes == ["FROZEN"] * 3
    group.thaw()
    assert not group.is_frozen()


def test_v1_freeze_that_never_completes_thaws_and_fails(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    host.fs.freezing_rounds = 10**6
    with pytest.raises(CgroupError, match="did not freeze"):
        group.freeze()
    assert _text(Path(group.paths["freezer"], "freezer.state")) == "THAWED"


def test_v1_kill_all_freezes_signals_every_pid_and_thaws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    group.add_pid(101)
    # A process that moved itself into a sub-cgroup of one hierarchy is still found.
    host.fs.mkdir(f"{group.paths['memory']}/sub", "test")
    host.fs.write(f"{group.paths['memory']}/sub/cgroup.procs", "102", "test")
    assert group.pids() == [101, 102]
    sent: list[tuple[list[int], int, bool]] = []
    freezer = Path(group.paths["freezer"], "freezer.state")

    def fake_signal(pids: list[int], sig: int) -> None:
        sent.append((list(pids), sig, _text(freezer) == "FROZEN"))

    monkeypatch.setattr(v1_module, "signal_pids", fake_signal)
    group.kill_all(signal.SIGTERM)
    assert sent == [([101, 102], signal.SIGTERM, True)]
    assert _text(freezer) == "THAWED"


def test_v1_stats_and_oom(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    paths = group.paths
    Path(paths["cpuacct"], "cpuacct.usage").write_text("123456789\n")
    Path(paths["memory"], "memory.usage_in_bytes").write_text("1000\n")
    Path(paths["memory"], "memory.max_usage_in_bytes").write_text("3000\n")
    Path(paths["memory"], "memory.failcnt").write_text("7\n")
    Path(paths["memory"], "memory.oom_control").write_text(
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"
    )
    Path(paths["pids"], "pids.current").write_text("3\n")
    Path(paths["blkio"], "blkio.throttle.io_service_bytes_recursive").write_text(
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n"
    )
    group.apply(ResourceLimits(pids_limit=9))
    stats = group.stats()
    assert stats.cpu_usage_ns == 123456789
    assert (stats.memory_usage_bytes, stats.memory_peak_bytes) == (1000, 3000)
    assert stats.memory_limit_bytes is None  # the kernel's "unlimited" number
    assert (stats.memory_failcnt, stats.oom_kills) == (7, 2)
    assert (stats.pids_current, stats.pids_limit) == (3, 9)
    assert (stats.blkio_read_bytes, stats.blkio_write_bytes) == (4097, 8192)
    assert group.oom_killed()


def test_v1_destroy_refuses_while_processes_remain_then_removes_all(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    before = host.all_dirs()
    driver = host.v1("a/b")
    group = driver.create("c1")
    group.add_pid(4242)
    with pytest.raises(CgroupError, match="still has processes"):
        group.destroy()
    for path in set(group.paths.values()):
        Path(path, "cgroup.procs").write_text("")  # the process exited
    group.destroy()
    assert driver.names() == []
    driver.prune()
    assert host.all_dirs() == before


def test_v1_prune_keeps_parents_it_did_not_create(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    host.fs.mkdir(f"{host.root}/pids/shared", "test")  # someone else's
    driver = host.v1("shared/codex32")
    driver.create("c1").destroy()
    driver.prune()
    assert Path(host.root, "pids/shared").is_dir()
    assert not Path(host.root, "pids/shared/codex32").exists()
    assert not Path(host.root, "cpu/shared").exists()  # ours in that hierarchy


def test_v1_absolute_parent_is_taken_from_the_hierarchy_root(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1("/codex32.slice").create("c1")
    assert group.paths["memory"] == f"{host.root}/memory/codex32.slice/c1"


#: Fake device paths and the numbers device_number gives them in these tests.
DEVICES = {"/dev/fake-a": "7:0", "/dev/disk/by-id/fake-b": "254:16"}


@pytest.fixture
def fake_devices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """device_number answers from DEVICES and records each lookup (made at apply time)."""
    looked_up: list[str] = []

    def number(path: str) -> str:
        looked_up.append(path)
        return DEVICES[path]

    monkeypatch.setattr(driver_module, "device_number", number)
    return looked_up


def device_limits(**lists: list[tuple[str, int]]) -> ResourceLimits:
    """ResourceLimits naming fake devices (the "stored" context skips the host check)."""
    return ResourceLimits.model_validate(
        {k: [{"path": p, "rate": r} for p, r in v] for k, v in lists.items()},
        context={"stored": True},
    )


THROTTLED = device_limits(
    device_read_bps=[("/dev/fake-a", 2 << 20)],
    device_write_bps=[("/dev/fake-a", 1 << 20), ("/dev/disk/by-id/fake-b", 512 << 10)],
    device_read_iops=[("/dev/disk/by-id/fake-b", 100)],
    device_write_iops=[("/dev/fake-a", 50)],
)


def test_v1_device_limits_write_one_rule_per_device(
    tmp_path: Path, fake_devices: list[str]
) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    group.apply(THROTTLED)
    blkio = group.paths["blkio"]
    writes = [(os.path.basename(p), v) for p, v in host.fs.writes if p.startswith(blkio + "/")]
    assert writes == [
        ("blkio.throttle.read_bps_device", f"7:0 {2 << 20}"),
        ("blkio.throttle.write_bps_device", f"7:0 {1 << 20}"),
        ("blkio.throttle.write_bps_device", f"254:16 {512 << 10}"),
        ("blkio.throttle.read_iops_device", "254:16 100"),
        ("blkio.throttle.write_iops_device", "7:0 50"),
    ]
    assert sorted(set(fake_devices)) == sorted(DEVICES)  # resolved when applied


def test_v1_device_limits_without_throttling_are_errors(
    tmp_path: Path, fake_devices: list[str]
) -> None:
    """A kernel without CONFIG_BLK_DEV_THROTTLING has no such file: nothing is written."""
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    os.unlink(Path(group.paths["blkio"], "blkio.throttle.write_iops_device"))
    host.fs.writes.clear()
    with pytest.raises(CgroupError, match=r"blkio\.throttle\.write_iops_device does not exist"):
        group.apply(THROTTLED)
    assert host.fs.writes == []


def test_a_device_gone_since_create_fails_apply_before_any_write(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    group = host.v1().create("c1")
    host.fs.writes.clear()
    limits = device_limits(device_write_bps=[("/dev/codex32-gone", 1 << 20)])
    with pytest.raises(CgroupError, match="cannot throttle /dev/codex32-gone") as caught:
        group.apply(limits)
    assert (caught.value.step, caught.value.errno) == ("apply", errno.ENOENT)
    assert host.fs.writes == []


def test_device_number_reads_the_node_now(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="no longer a block device"):
        driver_module.device_number("/dev/null")
    block = [p for p in Path("/sys/dev/block").glob("*") if Path("/dev", p.resolve().name).exists()]
    if not block:
        pytest.skip("no block device node under /dev on this machine")
    node = Path("/dev", block[0].resolve().name)
    rdev = os.stat(node).st_rdev
    assert driver_module.device_number(str(node)) == f"{os.major(rdev)}:{os.minor(rdev)}"


# -- v2 ------------------------------------------------------------------------------


def test_v2_weight_conversions_match_runc_and_crun() -> None:
    assert [shares_to_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]
    assert [blkio_to_io_weight(w) for w in (10, 500, 1000)] == [1, 4950, 10000]


def test_v2_delegates_from_the_root_cgroup_and_applies(tmp_path: Path) -> None:
    host = Host(tmp_path, "v2")
    driver = host.v2()
    group = driver.create("c1")
    path = Path(group.paths["unified"])
    assert path == host.root / "codex32" / "c1"
    # The root cgroup may have processes and still enable controllers (exempt).
    assert set(_text(host.root / "cgroup.subtree_control").split()) == set(v2_module.WANTED)
    assert set(_text(host.root / "codex32" / "cgroup.subtree_control").split()) == set(
        v2_module.WANTED
    )
    group.apply(
        ResourceLimits(
            cpus=1.5,
            cpu_shares=1024,
            cpuset_cpus="0",
            memory_bytes="64m",
            memory_swap_bytes="96m",
            memory_reservation_bytes="16m",
            pids_limit=10,
            blkio_weight=500,
        )
    )
    assert _text(path / "cpu.max") == "150000 100000"
    assert _text(path / "cpu.weight") == "39"
    assert _text(path / "cpuset.cpus") == "0"
    assert _text(path / "memory.max") == str(64 << 20)
    assert _text(path / "memory.swap.max") == str(32 << 20)  # swap alone on v2
    assert _text(path / "memory.low") == str(16 << 20)
    assert _text(path / "pids.max") == "10"
    assert _text(path / "io.weight") == "4950"
    group.apply(ResourceLimits(memory_bytes="64m", memory_swap_bytes=-1))
    assert _text(path / "memory.swap.max") == "max"
    (path / "io.bfq.weight").write_text("100")
    group.apply(ResourceLimits(blkio_weight=500))
    assert _text(path / "io.bfq.weight") == "500"  # BFQ takes the blkio range as is


def test_v2_device_limits_combine_per_device_in_io_max(
    tmp_path: Path, fake_devices: list[str]
) -> None:
    """One io.max write per device, all of its keys on the line; keys not set stay as they are."""
    host = Host(tmp_path, "v2")
    group = host.v2().create("c1")
    path = group.paths["unified"]
    group.apply(THROTTLED)
    writes = [v for p, v in host.fs.writes if p == f"{path}/io.max"]
    assert writes == [
        f"7:0 rbps={2 << 20} wbps={1 << 20} wiops=50",
        f"254:16 wbps={512 << 10} riops=100",
    ]
    os.unlink(Path(path, "io.max"))  # the io controller is not enabled for the group
    with pytest.raises(CgroupError, match=r"io\.max does not exist"):
        group.apply(device_limits(device_read_iops=[("/dev/fake-a", 10)]))


def test_v2_engine_cgroup_with_processes_cannot_delegate(tmp_path: Path) -> None:
    host = Host(tmp_path, "v2")
    # The engine sits in /engine (not the root), next to processes, no controllers on.
    engine = host.root / "engine"
    engine.mkdir()
    for name, value in {
        "cgroup.controllers": "cpu memory pids",
        "cgroup.subtree_control": "",
        "cgroup.type": "domain",
        "cgroup.procs": "77\n",
    }.items():
        (engine / name).write_text(value)
    Path(host.proc_cgroup).write_text("0::/engine\n")
    before = host.all_dirs()
    with pytest.raises(CgroupError, match="holds 1 process") as caught:
        host.v2().create("c1")
    assert "--cgroup-parent" in str(caught.value)
    assert host.all_dirs() == before  # moved nothing, created nothing
    # With no process of its own, the same cgroup is delegated.
    (engine / "cgroup.procs").write_text("")
    group = host.v2().create("c1")
    assert Path(group.paths["unified"], "memory.max").exists()


def test_v2_freeze_thaw_kill_stats(tmp_path: Path) -> None:
    host = Host(tmp_path, "v2")
    group = host.v2().create("c1")
    path = Path(group.paths["unified"])
    group.add_pid(555)
    group.freeze()
    assert group.is_frozen()
    group.thaw()
    assert not group.is_frozen()
    group.kill_all()  # SIGKILL goes through cgroup.kill
    assert group.pids() == []
    assert "1" in [v for p, v in host.fs.writes if p.endswith("cgroup.kill")]
    (path / "cpu.stat").write_text("usage_usec 2500\nuser_usec 2000\n")
    (path / "memory.current").write_text("4096\n")
    (path / "memory.peak").write_text("8192\n")
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (path / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1\n")
    group.apply(ResourceLimits(memory_bytes="64m"))
    stats = group.stats()
    assert stats.cpu_usage_ns == 2_500_000
    assert (stats.memory_usage_bytes, stats.memory_peak_bytes) == (4096, 8192)
    assert stats.memory_limit_bytes == 64 << 20
    assert (stats.pids_limit, stats.oom_kills) == (None, 1)
    assert (stats.blkio_read_bytes, stats.blkio_write_bytes) == (11, 20)
    assert group.oom_killed()
    group.destroy()
    assert not path.exists()


def test_v2_missing_file_is_an_error(tmp_path: Path) -> None:
    host = Host(tmp_path, "v2")
    group = host.v2().create("c1")
    os.unlink(Path(group.paths["unified"], "memory.swap.max"))
    with pytest.raises(CgroupError, match=r"memory\.swap\.max does not exist"):
        group.apply(ResourceLimits(memory_bytes="64m", memory_swap_bytes="128m"))


def test_real_drivers_satisfy_the_protocol(tmp_path: Path) -> None:
    drivers: list[CgroupDriver] = [Host(tmp_path, "v1").v1()]
    assert drivers[0].version == "v1"


def test_v1_prepares_a_parent_level_another_engine_made_but_not_yet_prepared(
    tmp_path: Path,
) -> None:
    """Two first starts at once: one has made the parent level, not yet copied its
    cpuset; the other must not build on the empty values (ENOSPC on join)."""
    host = Host(tmp_path, "v1")
    first = host.v1()
    half_made = host.root / "cpuset" / "codex32"
    host.fs.mkdir(str(half_made), "test")  # made, cpus/mems still empty
    assert _text(half_made / "cpuset.cpus") == ""
    group = first.create("c1")
    assert _text(half_made / "cpuset.cpus") == "0-1"
    assert _text(Path(group.paths["cpuset"], "cpuset.cpus")) == "0-1"
    group.add_pid(4242)


# -- probing each limit (per file, not per controller) ---------------------------------


def _probe(driver: CgroupDriver) -> dict[str, str]:
    from codex32._cgroups.containers import ContainerCgroups

    return ContainerCgroups("codex32", driver=driver).probe().unsupported


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_probe_finds_each_limit_file_and_leaves_no_cgroup(tmp_path: Path, layout: str) -> None:
    host = Host(tmp_path, layout)
    driver: CgroupDriver = host.v1() if layout == "v1" else host.v2()
    assert _probe(driver) == {}
    assert not [d for d in host.all_dirs() if "/probe-" in d], "the probe cgroup is removed"


@pytest.mark.parametrize(
    ("layout", "controller", "missing", "field", "why"),
    [
        (
            "v1",
            "blkio",
            ["blkio.bfq.weight"],
            "blkio_weight",
            "no I/O scheduler with cgroup weights",
        ),
        ("v1", "memory", [MEMSW], "memory_swap_bytes", "swapaccount=1"),
        ("v1", "cpu", ["cpu.cfs_quota_us"], "cpus", "CFS bandwidth"),
        ("v2", "io", ["io.weight"], "blkio_weight", "no io.bfq.weight or io.weight"),
        ("v2", "memory", ["memory.swap.max"], "memory_swap_bytes", "swapaccount=1"),
    ],
)
def test_probe_names_a_missing_file_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, controller: str,
    missing: list[str], field: str, why: str,
) -> None:  # fmt: skip
    table = V1_FILES if layout == "v1" else V2_FILES
    files = {k: v for k, v in table[controller].items() if k not in missing}
    monkeypatch.setitem(table, controller, files)
    host = Host(tmp_path, layout)
    found = _probe(host.v1() if layout == "v1" else host.v2())
    assert list(found) == [field], found
    assert why in found[field]


def test_probe_v1_cpuset_parent_without_cpus(tmp_path: Path) -> None:
    host = Host(tmp_path, "v1")
    (host.root / "cpuset" / "cpuset.cpus").write_text("")  # the engine's cpuset is empty
    found = _probe(host.v1())
    assert list(found) == ["cpuset_cpus"] and "has no CPUs" in found["cpuset_cpus"]


def test_probe_v2_controller_not_enabled(tmp_path: Path) -> None:
    host = Host(tmp_path, "v2")
    (host.root / "cgroup.controllers").write_text("cpuset cpu memory pids")  # no io
    found = _probe(host.v2())
    assert sorted(found) == sorted(["blkio_weight", *THROTTLE_FIELDS])
    assert all("io controller is not enabled" in why for why in found.values())

"""Validation of the user-facing models: bad input is refused with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from codex32 import (
    ContainerConfig,
    DeviceRate,
    IsolationType,
    ResourceLimits,
    TmpfsMount,
    Ulimit,
    Volume,
)
from codex32.config import container as config_module
from codex32.config.container import parse_size
from codex32.errors import ConfigError


def test_defaults_are_standard_and_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEX32_ISOLATION_LEVEL", raising=False)
    monkeypatch.delenv("CONTAINER_ISOLATION_LEVEL", raising=False)
    config = ContainerConfig(image="busybox")
    assert config.isolation is IsolationType.STANDARD
    assert config.command == []
    assert not config.read_only


def test_default_isolation_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The original design's variable sets the default for API configs as for the CLI.
    monkeypatch.delenv("CODEX32_ISOLATION_LEVEL", raising=False)
    monkeypatch.setenv("CONTAINER_ISOLATION_LEVEL", "STRICT")
    assert ContainerConfig(image="busybox").isolation is IsolationType.STRICT
    monkeypatch.setenv("CODEX32_ISOLATION_LEVEL", "minimal")  # the engine's own name wins
    assert ContainerConfig(image="busybox").isolation is IsolationType.MINIMAL
    explicit = ContainerConfig(image="busybox", isolation=IsolationType.STANDARD)
    assert explicit.isolation is IsolationType.STANDARD
    monkeypatch.setenv("CODEX32_ISOLATION_LEVEL", "paranoid")
    with pytest.raises(ConfigError, match=r"CODEX32_ISOLATION_LEVEL=.paranoid. is not an"):
        ContainerConfig(image="busybox")


@pytest.mark.parametrize("name", ["bad name", "-lead", ".dot", "a/b", "x" * 129, ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        ContainerConfig(image="busybox", name=name)


@pytest.mark.parametrize("name", ["bot", "my-bot.1", "A_b"])
def test_good_names(name: str) -> None:
    assert ContainerConfig(image="busybox", name=name).name == name


def test_volume_parse_and_resolve(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    volume = Volume.parse(f"{link}:/data:ro")
    assert volume.source == str(tmp_path.resolve())
    assert volume.target == "/data"
    assert volume.read_only


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("relative:/data", "absolute host path"),
        ("/definitely/missing/codex32:/data", "does not exist"),
        ("/tmp:data", "absolute path inside the container"),
        ("/tmp:/a/../b", r"must not contain '\.\.'"),
        ("/tmp:/", "hide the container's root"),
        ("/tmp:/x:rx", "SOURCE:TARGET"),
        ("/tmp", "SOURCE:TARGET"),
    ],
)
def test_bad_volumes(spec: str, message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        Volume.parse(spec)


def test_tmpfs_parse() -> None:
    mount = TmpfsMount.parse("/run:size=64m,mode=755,noexec")
    assert (mount.target, mount.size_bytes, mount.mode) == ("/run", 64 << 20, 0o755)
    assert "noexec" in mount.flags
    with pytest.raises(ValidationError, match="unknown tmpfs option"):
        TmpfsMount.parse("/run:bogus")


def test_ulimits() -> None:
    assert Ulimit.parse("nofile=100:200") == Ulimit(name="nofile", soft=100, hard=200)
    assert Ulimit.parse("core=unlimited").hard == -1
    with pytest.raises(ValidationError, match="unknown ulimit"):
        Ulimit.parse("files=1")
    with pytest.raises(ValidationError, match="exceeds hard"):
        Ulimit.parse("nofile=300:200")
    with pytest.raises(ValueError, match="NAME=SOFT"):
        Ulimit.parse("nofile")


def test_capabilities_are_normalized_and_checked() -> None:
    config = ContainerConfig(image="busybox", cap_add=["net_admin", "CAP_SYS_TIME", "all"])
    assert config.cap_add == ["CAP_NET_ADMIN", "CAP_SYS_TIME", "ALL"]
    with pytest.raises(ValidationError, match="unknown capability"):
        ContainerConfig(image="busybox", cap_drop=["CAP_FLY"])


def test_paths_and_duplicates() -> None:
    with pytest.raises(ValidationError, match="absolute"):
        ContainerConfig(image="busybox", working_dir="relative")
    with pytest.raises(ValidationError, match="more than one mount"):
        ContainerConfig(image="busybox", tmpfs=[TmpfsMount(target="/x"), TmpfsMount(target="/x/")])


def test_resource_ranges() -> None:
    assert ResourceLimits(memory_bytes="64m").memory_bytes == 64 << 20
    with pytest.raises(ValidationError):
        ResourceLimits(cpus=0)
    with pytest.raises(ValidationError):
        ResourceLimits(memory_bytes=1024)
    with pytest.raises(ValidationError, match="memory_swap needs memory"):
        ResourceLimits(memory_swap_bytes=1 << 30)
    with pytest.raises(ValidationError, match="at least memory"):
        ResourceLimits(memory_bytes=1 << 30, memory_swap_bytes=1 << 29)


def test_parse_size() -> None:
    assert parse_size("1g") == 1 << 30
    assert parse_size("512k") == 512 << 10
    assert parse_size("10MB") == 10 << 20
    with pytest.raises(ValueError, match="invalid size"):
        parse_size("lots")


def test_env_and_command_refuse_nul() -> None:
    with pytest.raises(ValidationError):
        ContainerConfig(image="busybox", env={"A=B": "x"})
    with pytest.raises(ValidationError, match="NUL"):
        ContainerConfig(image="busybox", command=["echo", "a\x00b"])


# -- per-device I/O limits (--device-read-bps and friends) ---------------------------


def a_block_device() -> str:
    """A whole-disk block device node of this machine (stat needs no root); else skip."""
    sys_block = Path("/sys/dev/block")
    entries = sorted(sys_block.iterdir()) if sys_block.is_dir() else []
    for entry in entries:
        node = Path("/dev", entry.resolve().name)
        if not (entry / "partition").exists() and node.is_block_device():
            return str(node)
    pytest.skip("no whole-disk block device node under /dev on this machine")


def test_device_rate_parse_uses_dockers_units() -> None:
    device = a_block_device()
    assert DeviceRate.parse(f"{device}:1mb") == DeviceRate(path=device, rate=1 << 20)
    assert DeviceRate.parse(f"{device}:512kb").rate == 512 << 10
    assert DeviceRate.parse(f"{device}:1MiB").rate == 1 << 20
    assert DeviceRate.parse(f"{device}:4096").rate == 4096
    assert DeviceRate.parse(f"{device}:100", iops=True).rate == 100


def test_device_rate_resolves_symlinks_for_the_check_but_keeps_the_path(tmp_path: Path) -> None:
    """by-id style links stay as given: the device number is read again at every start."""
    device = a_block_device()
    link = tmp_path / "disk-link"
    link.symlink_to(device)
    assert DeviceRate.parse(f"{link}:1mb").path == str(link)


@pytest.mark.parametrize(
    ("spec", "iops", "message"),
    [
        ("/dev/null:1mb", False, "not a block device"),
        ("/definitely/missing/disk:1mb", False, "cannot be used .*No such file"),
        ("dev/sda:1mb", False, "absolute host path"),
        ("/dev/null", False, "use PATH:RATE"),
        (":1mb", False, "use PATH:RATE"),
        ("/dev/sda:fast", False, "invalid rate 'fast'"),
        ("/dev/sda:1m", True, "whole number of IOs per second"),
        ("/dev/sda:-5", True, "whole number"),
        ("/dev/sda:", True, "use PATH:N"),
    ],
)
def test_bad_device_rates(spec: str, iops: bool, message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        DeviceRate.parse(spec, iops=iops)


def test_device_rate_must_be_positive() -> None:
    device = a_block_device()
    with pytest.raises(ValidationError, match="must be above 0"):
        DeviceRate.parse(f"{device}:0")
    with pytest.raises(ValidationError, match="must be above 0"):
        DeviceRate.parse(f"{device}:0", iops=True)


def test_a_partition_is_refused_naming_its_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/sys/dev/block/MAJ:MIN of a partition has a "partition" file; its parent is the disk."""
    device = a_block_device()
    rdev = os.stat(device).st_rdev
    disk = tmp_path / "devices" / "block" / "sdz"
    (disk / "sdz1").mkdir(parents=True)
    (disk / "sdz1" / "partition").write_text("1\n")
    (tmp_path / "dev-block").mkdir()
    (tmp_path / "dev-block" / f"{os.major(rdev)}:{os.minor(rdev)}").symlink_to(disk / "sdz1")
    monkeypatch.setattr(config_module, "SYS_DEV_BLOCK", str(tmp_path / "dev-block"))
    with pytest.raises(ValidationError, match=r"is a partition .* limit /dev/sdz instead"):
        DeviceRate.parse(f"{device}:1mb")


def test_resource_limits_take_docker_specs_and_check_ranges() -> None:
    device = a_block_device()
    limits = ResourceLimits(
        device_read_bps=[f"{device}:2mb"],
        device_write_iops=[DeviceRate(path=device, rate=50)],
    )
    assert limits.device_read_bps == [DeviceRate(path=device, rate=2 << 20)]
    assert limits.device_write_iops[0].rate == 50
    assert ResourceLimits().device_write_bps == []
    with pytest.raises(ValidationError, match="whole number of IOs"):
        ResourceLimits(device_read_iops=[f"{device}:1mb"])
    with pytest.raises(ValidationError, match="above the kernel's maximum 4294967295"):
        ResourceLimits(device_write_iops=[DeviceRate(path=device, rate=1 << 32)])
    with pytest.raises(ValidationError, match="given more than once"):
        ResourceLimits(device_write_bps=[f"{device}:1mb", f"{device}:2mb"])


def test_stored_device_limits_reload_without_the_device() -> None:
    """A stored config names a device that may be gone; start (apply) reports that, not load."""
    stored = {
        "image": "busybox",
        "resources": {"device_write_bps": [{"path": "/dev/gone-since", "rate": 1048576}]},
    }
    config = ContainerConfig.model_validate(stored, context={"stored": True})
    [rate] = config.resources.device_write_bps
    assert (rate.path, rate.rate) == ("/dev/gone-since", 1 << 20)
    assert (
        ContainerConfig.model_validate(config.model_dump(mode="json"), context={"stored": True})
        == config
    )
    with pytest.raises(ValidationError, match="cannot be used"):
        ContainerConfig.model_validate(stored)


# -- issue 11: ids, shadowed targets, line breaks ----------------------------------


@pytest.mark.parametrize(
    ("user", "what"),
    [
        ("4294967295", "uid 4294967295"),
        ("4294967296", "uid 4294967296"),
        ("99999999999999999999999", "uid 99999999999999999999999"),
        ("1000:4294967295", "gid 4294967295"),
        ("4294967295:1000", "uid 4294967295"),
    ],
)
def test_ids_the_kernel_would_not_take_are_refused(user: str, what: str) -> None:
    # (uid_t)-1 is setresuid's "leave it": the process would stay uid 0.
    with pytest.raises(ValidationError, match=f"{what} is out of range"):
        ContainerConfig(image="busybox", user=user)


@pytest.mark.parametrize(
    "user", ["0", "4294967294", "1000:1000", "bot", "bot:staff", "0:4294967294"]
)
def test_ids_in_range_and_names_pass(user: str) -> None:
    assert ContainerConfig(image="busybox", user=user).user == user


@pytest.mark.parametrize("user", ["a:b:c", "", "x y", "root:"])
def test_malformed_users_are_refused(user: str) -> None:
    with pytest.raises(ValidationError, match="is not user"):
        ContainerConfig(image="busybox", user=user)


@pytest.mark.parametrize(
    "target",
    ["/", "/proc", "/proc/sys", "/proc/sys/kernel", "/proc/kcore", "/sys", "/sys/firmware",
     "/dev", "//proc", "/proc/"],
)  # fmt: skip
def test_targets_that_shadow_what_the_engine_mounts_are_refused(
    target: str, tmp_path: Path
) -> None:
    with pytest.raises(ValidationError, match=r"would (hide|cover)"):
        Volume(source=str(tmp_path), target=target)
    with pytest.raises(ValidationError, match=r"would (hide|cover)"):
        TmpfsMount.parse(target)


@pytest.mark.parametrize("target", ["/data", "/dev/log", "/proc/cpuinfo", "/procfoo", "/system"])
def test_targets_beside_them_pass(target: str, tmp_path: Path) -> None:
    assert Volume(source=str(tmp_path), target=target).target == target


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda d: Volume(source=d, target="/data\n/etc"), "contains a newline"),
        (lambda d: Volume(source=d + "\n", target="/data"), "contains a newline"),
        (lambda d: Volume(source=d + "\x00", target="/data"), "contains a NUL"),
        (lambda d: TmpfsMount.parse("/run:size=1m\nmode=777"), "contains a newline"),
        (lambda d: TmpfsMount.parse("/run\n"), "contains a newline"),
        (lambda d: ContainerConfig(image="busybox", env={"A\nB": "1"}), "contains a newline"),
        (lambda d: ContainerConfig(image="busybox", env={"A": "1\x002"}), "NUL"),
        (lambda d: ContainerConfig(image="busybox", working_dir="/w\n"), "contains a newline"),
    ],
)
def test_line_breaks_and_nul_are_refused(build: object, message: str, tmp_path: Path) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        build(str(tmp_path))  # type: ignore[operator]


def test_device_mappings_parse_as_dockers() -> None:
    from codex32 import DeviceMapping

    assert DeviceMapping.parse("/dev/null").model_dump() == {
        "host_path": "/dev/null", "container_path": "/dev/null", "permissions": "rwm"
    }  # fmt: skip
    assert DeviceMapping.parse("/dev/null:/dev/x:wr").permissions == "rw"
    assert DeviceMapping.parse("/dev/null:r").container_path == "/dev/null"
    for spec, message in [
        ("/etc/passwd", "is not a device node"),
        ("/dev/null:/proc/x", "would cover /proc"),
        ("/dev/null:/dev/x:rx", "use letters of rwm"),
        ("/dev/null:/dev/x:r:y", "HOST"),
        ("dev/null", "absolute"),
    ]:
        with pytest.raises(ValueError, match=message):
            DeviceMapping.parse(spec)


def test_safe_defaults_for_logs_and_pids() -> None:
    config = ContainerConfig(image="busybox")
    assert (config.log_max_size, config.log_max_files) == (20 << 20, 5)
    assert ContainerConfig(image="busybox", log_max_size="-1").log_max_size is None
    assert ResourceLimits(pids_limit=0).pids_limit == -1  # Docker's 0: unlimited
    with pytest.raises(ValidationError):
        ResourceLimits(pids_limit=-2)

"""Validation of the user-facing models: bad input is refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from codex32 import ContainerConfig, IsolationType, ResourceLimits, TmpfsMount, Ulimit, Volume
from codex32.config import parse_size


def test_defaults_are_standard_and_empty() -> None:
    config = ContainerConfig(image="busybox")
    assert config.isolation is IsolationType.STANDARD
    assert config.command == []
    assert not config.read_only


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

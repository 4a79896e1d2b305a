"""Bad input is refused before anything is created; a failed launch leaves nothing.

"Nothing" is checked each time: no container directory or name in the storage
directory, no host mount naming it, no set-up or monitor process (``codex32._runtime.init``,
``codex32._runtime.monitor``) of this test run.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    assert_nothing_new,
    engine_with_templates,
    host_tmpdir,
    sh,
    snapshot,
)
from pydantic import ValidationError

from codex32 import (
    ConfigError,
    ContainerConfig,
    ContainerEngine,
    ContainerState,
    ImageError,
    IsolationType,
    LaunchError,
    ResourceLimits,
    TmpfsMount,
    Ulimit,
    Volume,
)
from codex32.settings import Settings

pytestmark = pytest.mark.root


@pytest.fixture
def host_dir() -> Iterator[Path]:
    with host_tmpdir() as path:
        yield path


def _config(**fields: object) -> ContainerConfig:
    return ContainerConfig.model_validate(
        {"image": "busybox", "command": ["true"], "auto_remove": True, **fields}
    )


# Each builds a config from a host directory that exists; each must raise.
INVALID: dict[str, Callable[[Path], object]] = {
    "name with a space": lambda d: _config(name="bad name"),
    "name starting with a dash": lambda d: _config(name="-x"),
    "name with a slash": lambda d: _config(name="a/b"),
    "name too long": lambda d: _config(name="a" * 129),
    "image name with a slash": lambda d: _config(image="../busybox"),
    "unknown field": lambda d: _config(priviledged=True),
    "bad isolation level": lambda d: _config(isolation="paranoid"),
    "relative volume target": lambda d: Volume(source=str(d), target="data"),
    "'..' in a volume target": lambda d: Volume(source=str(d), target="/data/../etc"),
    "volume target /": lambda d: Volume(source=str(d), target="/"),
    "relative volume source": lambda d: Volume(source="data", target="/data"),
    "missing volume source": lambda d: Volume(source=str(d / "missing"), target="/data"),
    "volume spec without a target": lambda d: Volume.parse(str(d)),
    "volume spec with a bad mode": lambda d: Volume.parse(f"{d}:/data:rx"),
    "two mounts on one target": lambda d: _config(
        volumes=[Volume(source=str(d), target="/x"), Volume(source=str(d), target="/x/")]
    ),
    "relative tmpfs target": lambda d: TmpfsMount(target="scratch"),
    "unknown tmpfs option": lambda d: TmpfsMount(target="/scratch", flags=("suidroot",)),
    "unknown capability to add": lambda d: _config(cap_add=["CAP_FLY"]),
    "unknown capability to drop": lambda d: _config(cap_drop=["TELEPORT"]),
    "unknown ulimit": lambda d: Ulimit.parse("bogus=1"),
    "ulimit soft above hard": lambda d: Ulimit.parse("nofile=200:100"),
    "ulimit not a number": lambda d: Ulimit.parse("nofile=lots"),
    "ulimit without a value": lambda d: Ulimit.parse("nofile"),
    "negative ulimit": lambda d: Ulimit(name="nofile", soft=-5, hard=10),
    "ulimit given twice": lambda d: _config(
        ulimits=[Ulimit.parse("nofile=1:2"), Ulimit.parse("nofile=3:4")]
    ),
    "relative working dir": lambda d: _config(working_dir="app"),
    "'..' in the working dir": lambda d: _config(working_dir="/app/../.."),
    "bad hostname": lambda d: _config(hostname="bad_host!"),
    "hostname too long": lambda d: _config(hostname="h" * 64),
    "bad user": lambda d: _config(user="root; rm -rf /"),
    "env name with '='": lambda d: _config(env={"A=B": "c"}),
    "NUL in an env value": lambda d: _config(env={"A": "b\x00c"}),
    "empty command": lambda d: _config(command=[""]),
    "NUL in the command": lambda d: _config(command=["echo", "a\x00b"]),
    "negative memory": lambda d: ResourceLimits(memory_bytes=-1),
    "cpus 0": lambda d: ResourceLimits(cpus=0),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_config_is_refused_before_anything_is_created(
    engine: ContainerEngine, storage_dir: Path, host_dir: Path, case: str
) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(ValueError) as refused:  # pydantic's ValidationError is one
        built = INVALID[case](host_dir)
        if isinstance(built, ContainerConfig):
            engine.containers.run(built)
    if not isinstance(refused.value, ValidationError):
        assert str(refused.value)  # a plain ValueError from a parser, with a message
    assert_nothing_new(before, storage_dir)
    assert os.listdir(host_dir) == []


def test_validation_messages_say_what_is_wrong(host_dir: Path) -> None:
    with pytest.raises(ValidationError, match="must be an absolute path"):
        Volume(source=str(host_dir), target="data")
    with pytest.raises(ValidationError, match="does not exist"):
        Volume(source=str(host_dir / "missing"), target="/data")
    with pytest.raises(ValidationError, match=r"'\.\.'"):
        Volume(source=str(host_dir), target="/a/../b")
    with pytest.raises(ValidationError, match="unknown capability"):
        _config(cap_add=["CAP_FLY"])
    with pytest.raises(ValidationError, match="soft limit"):
        Ulimit.parse("nofile=200:100")


@pytest.mark.parametrize("image", ["no-such-template", "/etc"])
def test_unknown_template_is_refused(
    engine: ContainerEngine, storage_dir: Path, image: str
) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(ImageError, match="no rootfs template"):
        engine.containers.run(_config(image=image))
    with pytest.raises(ImageError):
        engine.plan(_config(image=image))
    assert_nothing_new(before, storage_dir)
    assert not (storage_dir / "templates" / "no-such-template").exists()


def test_a_template_that_fails_to_build_is_refused(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    name = f"broken-{secrets.token_hex(4)}"
    with host_tmpdir() as recipes:
        (recipes / name).mkdir()
        (recipes / name / "template.toml").write_text('build = "build.sh"\n')
        (recipes / name / "build.sh").write_text("echo 'cannot build this' >&2\nexit 3\n")
        before = snapshot(storage_dir)
        with (
            engine_with_templates(engine, recipes) as broken,
            pytest.raises(ImageError, match="cannot build this"),
        ):
            broken.containers.run(_config(image=name))
    assert_nothing_new(before, storage_dir)
    built = storage_dir / "templates" / name
    assert not (built / "rootfs").exists()
    assert not list(built.glob(".build-*"))  # no half-built staging tree


def test_taken_name_is_refused(engine: ContainerEngine, storage_dir: Path) -> None:
    name = f"taken-{secrets.token_hex(4)}"
    first = engine.containers.run(_config(name=name, auto_remove=False))
    try:
        before = snapshot(storage_dir)
        with pytest.raises(ConfigError, match="already in use"):
            engine.containers.run(_config(name=name))
        assert_nothing_new(before, storage_dir)
    finally:
        engine.containers.get(first.container_id).remove(force=True)
    assert first.exit_code == 0


def test_strict_refuses_a_storage_dir_its_root_cannot_reach(engine: ContainerEngine) -> None:
    with host_tmpdir(mode=0o700) as private:
        storage = private / "storage"
        locked = ContainerEngine(settings=dataclasses.replace(engine.settings, storage_dir=storage))
        with locked, pytest.raises(ConfigError, match="not searchable"):
            locked.containers.run(_config(isolation=IsolationType.STRICT))
        containers = storage / "containers"
        assert not containers.exists() or os.listdir(containers) == []
        names = storage / "names"
        assert not names.exists() or os.listdir(names) == []


def test_hostname_without_a_uts_namespace_is_refused(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """MINIMAL shares the host's uts namespace: a hostname there cannot be honoured.

    Docker refuses ``-h`` with ``--uts=host``. Silently ignoring it leaves the
    container's $HOSTNAME naming a host it is not on.
    """
    nodename = os.uname().nodename
    before = snapshot(storage_dir)
    with pytest.raises(ValidationError, match="UTS namespace"):
        _config(isolation=IsolationType.MINIMAL, hostname="mybox")
    assert os.uname().nodename == nodename
    assert_nothing_new(before, storage_dir)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("CONTAINER_ISOLATION_LEVEL", "paranoid", "not an isolation level"),
        ("CODEX32_USERNS_UID_BASE", "0", "out of range"),
        ("CODEX32_USERNS_UID_BASE", "many", "not a whole number"),
    ],
)
def test_bad_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, storage_dir: Path, variable: str, value: str, message: str
) -> None:
    monkeypatch.delenv("CODEX32_ISOLATION_LEVEL", raising=False)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(storage_dir)


# -- failures in the middle of a launch ----------------------------------------


def _vanished_volume(host_dir: Path) -> Volume:
    """A volume whose source existed when validated and is gone at launch."""
    source = host_dir / "gone"
    source.mkdir()
    volume = Volume(source=str(source), target="/data")
    source.rmdir()
    return volume


MID_LAUNCH: dict[str, tuple[Callable[[Path], ContainerConfig], int, str]] = {
    "unknown user": (lambda d: sh("id", user="nosuchuser"), 125, "user"),
    "unknown group": (lambda d: sh("id", user="bot:nosuchgroup"), 125, "user"),
    "volume source gone": (lambda d: sh("true", volumes=[_vanished_volume(d)]), 125, "bind"),
    "rlimit above the kernel's": (
        lambda d: sh("true", ulimits=[Ulimit(name="nofile", soft=-1, hard=-1)]),
        125,
        "rlimits",
    ),
    "working dir is a file": (lambda d: sh("true", working_dir="/etc/passwd"), 125, "cwd"),
    "not executable": (lambda d: _config(command=["/etc/passwd"]), 126, "exec"),
    "not found": (lambda d: _config(command=["no-such-command"]), 127, "exec"),
}


@pytest.mark.parametrize("level", list(IsolationType), ids=lambda lv: lv.value)
@pytest.mark.parametrize("case", list(MID_LAUNCH))
def test_failed_launch_leaves_nothing_behind(
    engine: ContainerEngine,
    storage_dir: Path,
    host_dir: Path,
    case: str,
    level: IsolationType,
) -> None:
    build, exit_code, step = MID_LAUNCH[case]
    config = build(host_dir).model_copy(update={"isolation": level})
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError) as failure:
        engine.containers.run(config)
    assert failure.value.exit_code == exit_code
    assert failure.value.step == step
    assert_nothing_new(before, storage_dir)


def test_failed_launch_without_auto_remove_keeps_an_exited_record(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    name = f"failed-{secrets.token_hex(4)}"
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError):
        engine.containers.run(_config(name=name, user="nosuchuser", auto_remove=False))
    container = engine.containers.get(name)
    try:
        # Docker shows a container whose start failed as "created"; "exited" is fine too.
        assert container.state in (ContainerState.CREATED, ContainerState.EXITED)
        after = snapshot(storage_dir)
        assert after.containers - before.containers == {container.id}
        assert after.mounts == before.mounts
        assert after.processes - before.processes == set()
    finally:
        container.remove()
    assert_nothing_new(before, storage_dir)

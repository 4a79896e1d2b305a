"""The container's filesystem, from inside: overlay root, volumes, tmpfs, /dev, escapes.

The symlink-escape tests use a template of their own, built from the busybox recipe
plus symlinks that point out of the root (absolute, absolute with ``..``, relative
with ``..``) at a host directory; every mount that goes through one must be refused,
and that host directory must stay empty.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from helpers import (
    BUSYBOX,
    EROFS_TEXT,
    LEVELS,
    PYTHON,
    SESSION_TAG,
    Snapshot,
    assert_nothing_new,
    engine_with_templates,
    facts,
    host_tmpdir,
    mountinfo,
    output_of,
    sh,
    snapshot,
    write_recipe,
)

from codex32 import (
    ContainerEngine,
    ContainerNotFoundError,
    IsolationType,
    LaunchError,
    TmpfsMount,
    Volume,
)
from codex32._linux import syscalls

pytestmark = pytest.mark.root

MINIMAL, STANDARD, STRICT = LEVELS
T = TypeVar("T")


@pytest.fixture
def host_dir() -> Iterator[Path]:
    with host_tmpdir() as path:
        yield path


# -- the overlay root --------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_root_is_an_overlay_of_the_template(engine: ContainerEngine, level: IsolationType) -> None:
    out = output_of(engine, sh("cat /proc/self/mountinfo", isolation=level))
    root = mountinfo(out)["/"]
    assert root.fstype == "overlay"


def test_writes_to_the_root_stay_in_the_container(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    out = output_of(engine, sh("echo mine > /etc/marker && cat /etc/marker"))
    assert out == "mine\n"
    # Neither the next container nor the built template sees it.
    out = output_of(engine, sh("test -e /etc/marker && echo seen || echo unseen"))
    assert out == "unseen\n"
    assert not list(storage_dir.glob("templates/busybox/rootfs*/etc/marker"))


def test_strict_root_is_read_only_and_tmp_is_writable(engine: ContainerEngine) -> None:
    script = r"""
echo "root=$(touch /newfile 2>&1 && echo written)"
echo "etc=$( (echo x >> /etc/passwd) 2>&1 && echo written)"
echo "tmp=$(touch /tmp/f 2>&1 && echo written)"
echo "shm=$(touch /dev/shm/f 2>&1 && echo written)"
echo "passwd_owner=$(stat -c %u:%g /etc/passwd)"
echo "passwd_head=$(head -n 1 /etc/passwd)"
echo "busybox_owner=$(stat -c %u:%g /bin/busybox)"
echo "id=$(id)"
"""
    found = facts(output_of(engine, sh(script, isolation=STRICT)))
    assert EROFS_TEXT in found["root"]
    assert EROFS_TEXT in found["etc"]
    assert found["tmp"] == "written"
    assert found["shm"] == "written"
    # User namespace + overlay: the template's files are root's inside, and readable.
    assert found["passwd_owner"] == "0:0"
    assert found["busybox_owner"] == "0:0"
    assert found["passwd_head"] == "root:x:0:0:root:/root:/bin/sh"
    assert found["id"].startswith("uid=0(root) gid=0(root)")


@pytest.mark.parametrize("level", [MINIMAL, STANDARD], ids=lambda lv: lv.value)
def test_read_only_root_on_request(engine: ContainerEngine, level: IsolationType) -> None:
    script = (
        'echo "root=$(touch /newfile 2>&1 && echo written)"; '
        'echo "tmp=$(touch /tmp/f 2>&1 && echo written)"'
    )
    found = facts(output_of(engine, sh(script, isolation=level, read_only=True)))
    assert EROFS_TEXT in found["root"]
    assert found["tmp"] == "written"


@pytest.mark.parametrize("level", [MINIMAL, STANDARD], ids=lambda lv: lv.value)
def test_root_is_writable_by_default_below_strict(
    engine: ContainerEngine, level: IsolationType
) -> None:
    out = output_of(engine, sh("touch /newfile && echo written", isolation=level))
    assert out == "written\n"


# -- /dev ------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_dev_is_minimal(engine: ContainerEngine, level: IsolationType) -> None:
    script = r"""
echo "entries=$(ls /dev | tr '\n' ' ')"
echo "null=$(echo x > /dev/null && echo ok)"
echo "zero=$(head -c 4 /dev/zero | wc -c)"
echo "urandom=$(head -c 8 /dev/urandom | wc -c)"
echo "full=$( (echo x > /dev/full) 2>&1)"
"""
    found = facts(output_of(engine, sh(script, isolation=level)))
    entries = set(found["entries"].split())
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm"} <= entries
    host_only = {p for p in os.listdir("/dev") if p not in entries}
    assert host_only, "the container sees the host's whole /dev"
    assert not {e for e in entries if e.startswith(("sd", "vd", "nvme", "loop", "mem", "kmsg"))}
    assert found["null"] == "ok"
    assert found["zero"] == "4"
    assert found["urandom"] == "8"
    assert "No space left on device" in found["full"]


# -- volumes ---------------------------------------------------------------------


@pytest.mark.parametrize("level", [MINIMAL, STANDARD], ids=lambda lv: lv.value)
def test_rw_volume_writes_reach_the_host(
    engine: ContainerEngine, host_dir: Path, level: IsolationType
) -> None:
    (host_dir / "from-host").write_text("hello from the host\n")
    out = output_of(
        engine,
        sh(
            "cat /data/from-host && echo written-inside > /data/from-container",
            isolation=level,
            volumes=[Volume(source=str(host_dir), target="/data")],
        ),
    )
    assert out == "hello from the host\n"
    assert (host_dir / "from-container").read_text() == "written-inside\n"


def test_rw_volume_in_strict(engine: ContainerEngine, host_dir: Path) -> None:
    base = engine.settings.userns_uid_base
    os.chown(host_dir, base, base)
    output_of(
        engine,
        sh(
            "echo strict > /data/f",
            isolation=STRICT,
            volumes=[Volume(source=str(host_dir), target="/data")],
        ),
    )
    assert (host_dir / "f").read_text() == "strict\n"


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_ro_volume_refuses_writes(
    engine: ContainerEngine, host_dir: Path, level: IsolationType
) -> None:
    (host_dir / "existing").write_text("keep me\n")
    if level is STRICT:
        os.chown(host_dir, engine.settings.userns_uid_base, engine.settings.userns_uid_base)
    script = r"""
echo "read=$(cat /data/existing)"
echo "create=$(touch /data/new 2>&1 && echo written)"
echo "overwrite=$( (echo x > /data/existing) 2>&1 && echo written)"
echo "remove=$(rm /data/existing 2>&1 && echo removed)"
echo --- mountinfo
cat /proc/self/mountinfo
"""
    out = output_of(
        engine,
        sh(
            script,
            isolation=level,
            volumes=[Volume(source=str(host_dir), target="/data", read_only=True)],
        ),
    )
    head, _, mounts = out.partition("--- mountinfo\n")
    found = facts(head)
    assert found["read"] == "keep me"
    for action in ("create", "overwrite", "remove"):
        assert EROFS_TEXT in found[action], action
    assert "ro" in mountinfo(mounts)["/data"].options
    assert sorted(os.listdir(host_dir)) == ["existing"]
    assert (host_dir / "existing").read_text() == "keep me\n"


def _in_private_mount_namespace(work: Callable[[], T]) -> T:
    """Run ``work`` in a thread of its own mount namespace (private: nothing propagates).

    Mounts the test makes there never reach the host, and go with the namespace. The
    engine sees the thread is in other namespaces than its fork server and starts the
    container's monitor from the thread instead, so the container sees them too.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def thread() -> None:
        try:
            syscalls.unshare(syscalls.CLONE_NEWNS)
            syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
            outcome.append(work())
        except BaseException as exc:
            failure.append(exc)

    runner = threading.Thread(target=thread, name="private-mount-ns")
    runner.start()
    runner.join()
    if failure:
        raise failure[0]
    return outcome[0]


NESTED_SCRIPT = r"""
echo "top=$(touch /data/new 2>&1 && echo written)"
echo "nested=$(touch /data/nested/new 2>&1 && echo written)"
echo "read=$(cat /data/nested/from-host)"
echo --- mountinfo
cat /proc/self/mountinfo
"""


@pytest.mark.parametrize("read_only", [True, False], ids=["ro", "rw"])
@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_ro_volume_is_read_only_below_its_nested_mounts(
    engine: ContainerEngine, host_dir: Path, level: IsolationType, read_only: bool
) -> None:
    """A mount inside a ``:ro`` volume's source is read-only too (runc's ``rro``).

    The bind is recursive, so the host's tmpfs below the source comes along; it must
    not stay writable. ``rw`` is the control: the same write then succeeds.
    """
    nested = host_dir / "nested"
    nested.mkdir()
    if level is STRICT:
        os.chown(host_dir, engine.settings.userns_uid_base, engine.settings.userns_uid_base)

    def run() -> tuple[str, list[str]]:
        syscalls.mount("tmpfs", str(nested), "tmpfs", 0, "size=1m,mode=1777")
        (nested / "from-host").write_text("below\n")
        out = output_of(
            engine,
            sh(
                NESTED_SCRIPT,
                isolation=level,
                volumes=[Volume(source=str(host_dir), target="/data", read_only=read_only)],
            ),
        )
        return out, sorted(os.listdir(nested))

    out, on_the_tmpfs = _in_private_mount_namespace(run)
    head, _, mounts = out.partition("--- mountinfo\n")
    found = facts(head)
    inside = mountinfo(mounts)
    assert found["read"] == "below"
    assert inside["/data/nested"].fstype == "tmpfs"
    if read_only:
        assert EROFS_TEXT in found["top"]
        assert EROFS_TEXT in found["nested"]
        assert "ro" in inside["/data/nested"].options
        assert on_the_tmpfs == ["from-host"]
    else:
        assert found["top"] == found["nested"] == "written"
        assert on_the_tmpfs == ["from-host", "new"]
    assert not nested.joinpath("new").exists()  # the tmpfs was never the host's


# Without mount_setattr (ENOSYS: kernels before 5.12, or hidden by seccomp) each mount
# of the tree is remounted instead. Run in a child of its own mount namespace.
FALLBACK_SCRIPT = r"""
import errno, os, sys
from codex32._linux import mounts, syscalls

def fails_with(err):
    def mount_setattr(*args, **kwargs):
        raise OSError(err, f"mount_setattr: {os.strerror(err)}")
    return mount_setattr

base = sys.argv[1]
syscalls.unshare(syscalls.CLONE_NEWNS)
mounts.make_private()
source, root = f"{base}/source", f"{base}/root"
for path in (f"{source}/nested", root):
    os.makedirs(path)
    syscalls.mount("tmpfs", path, "tmpfs", 0, "size=1m")
os.mkdir(f"{source}/nested/deeper")
syscalls.mount("tmpfs", f"{source}/nested/deeper", "tmpfs", 0, "size=1m")
root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
mounts.mount_setattr = fails_with(errno.EPERM)  # any other error is the step's
try:
    mounts.bind(root_fd, source, "/other", read_only=True)
except OSError as exc:
    print(f"other={errno.errorcode[exc.errno]}")
mounts.mount_setattr = fails_with(errno.ENOSYS)
mounts.bind(root_fd, source, "/data", read_only=True)
for name in ("data", "data/nested", "data/nested/deeper", "../source/nested"):
    try:
        open(f"{root}/{name}/f", "w").close()
        print(f"{name}=written")
    except OSError as exc:
        print(f"{name}={errno.errorcode[exc.errno]}")
"""


def test_ro_bind_without_mount_setattr_remounts_each_nested_mount(host_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT, str(host_dir)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert facts(result.stdout) == {
        "other": "EPERM",
        "data": "EROFS",
        "data/nested": "EROFS",
        "data/nested/deeper": "EROFS",
        "../source/nested": "written",  # the source itself stays writable
    }
    assert os.listdir(host_dir / "source" / "nested") == []  # its tmpfs went with the namespace


def test_file_volume_and_missing_target_parents(engine: ContainerEngine, host_dir: Path) -> None:
    source = host_dir / "settings.txt"
    source.write_text("answer=42\n")
    out = output_of(
        engine,
        sh(
            "cat /opt/deep/config/settings.txt; "
            'echo "write=$( (echo x >> /opt/deep/config/settings.txt) 2>&1)"',
            volumes=[
                Volume(source=str(source), target="/opt/deep/config/settings.txt", read_only=True)
            ],
        ),
    )
    found = facts(out)
    assert found["answer"] == "42"
    assert EROFS_TEXT in found["write"]
    assert source.read_text() == "answer=42\n"


def test_volume_mounted_over_a_template_directory(engine: ContainerEngine, host_dir: Path) -> None:
    (host_dir / "only-on-host").touch()
    out = output_of(
        engine,
        sh("ls /etc", volumes=[Volume(source=str(host_dir), target="/etc", read_only=True)]),
    )
    assert out.split() == ["only-on-host"]


def test_tmpfs_mount(engine: ContainerEngine) -> None:
    script = (
        "echo data > /scratch/f && cat /scratch/f && "
        "stat -c mode=%a /scratch && cat /proc/self/mountinfo"
    )
    out = output_of(engine, sh(script, tmpfs=[TmpfsMount.parse("/scratch:size=1m,mode=0700")]))
    assert out.startswith("data\n")
    assert facts(out)["mode"] == "700"
    scratch = mountinfo(out)["/scratch"]
    assert scratch.fstype == "tmpfs"
    assert {"nosuid", "nodev"} <= scratch.options


# -- symlink escapes -------------------------------------------------------------


@pytest.fixture(scope="module")
def escape_target() -> Iterator[Path]:
    """The host directory the template's symlinks point at: it must stay empty."""
    with host_tmpdir() as path:
        yield path


@pytest.fixture(scope="module")
def escape_engine(engine: ContainerEngine, escape_target: Path) -> Iterator[ContainerEngine]:
    """An engine whose ``escapebox`` template holds symlinks out of the root."""
    busybox_recipe = engine.settings.templates_dir / BUSYBOX / "build.sh"
    with host_tmpdir() as recipes:
        write_recipe(
            recipes,
            "escapebox",
            f'/bin/sh {busybox_recipe} "$1" >/dev/null\n'
            f'ln -s /../../../../../..{escape_target} "$1/escape"\n'
            f'ln -s {escape_target} "$1/abs"\n'
            f'ln -s ../../../../../../../../..{escape_target} "$1/rel"\n'
            f'mkdir -p "$1/inside"\n',
        )
        with engine_with_templates(engine, recipes) as escaping:
            escaping.images.build("escapebox", quiet=True)
            yield escaping


# Below a symlink, and the symlink itself ('..' in a target is refused by the model).
ESCAPES = ["/escape/x", "/abs/x", "/rel/x", "/escape", "/abs", "/rel"]


@pytest.mark.parametrize("target", ESCAPES)
@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_volume_through_a_symlink_out_of_the_root_is_refused(
    escape_engine: ContainerEngine,
    escape_target: Path,
    host_dir: Path,
    storage_dir: Path,
    level: IsolationType,
    target: str,
) -> None:
    before: Snapshot = snapshot(storage_dir)
    config = sh(
        f"echo escaped > {target}/file",
        image="escapebox",
        isolation=level,
        volumes=[Volume(source=str(host_dir), target=target)],
    )
    with pytest.raises(LaunchError) as failure:
        escape_engine.containers.run(config)
    assert failure.value.step == "bind"
    assert failure.value.exit_code == 125
    assert "outside the container root" in str(failure.value)
    assert os.listdir(escape_target) == []
    assert os.listdir(host_dir) == []
    assert_nothing_new(before, storage_dir)


def test_the_escape_template_symlinks_are_there(escape_engine: ContainerEngine) -> None:
    """The control: the template really holds the symlinks (readlink from inside)."""
    out = output_of(
        escape_engine,
        sh("for l in escape abs rel; do echo $l=$(readlink /$l); done", image="escapebox"),
    )
    found = facts(out)
    assert found["abs"].startswith(f"/tmp/{SESSION_TAG}-it-")
    assert found["escape"].startswith("/../")
    assert found["rel"].startswith("../")


@pytest.mark.parametrize("target", ["/escape/work", "/abs"])
def test_working_dir_through_a_symlink_out_of_the_root_is_refused(
    escape_engine: ContainerEngine, escape_target: Path, storage_dir: Path, target: str
) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError) as failure:
        escape_engine.containers.run(sh("touch made-here", image="escapebox", working_dir=target))
    assert failure.value.exit_code == 125
    assert os.listdir(escape_target) == []
    assert_nothing_new(before, storage_dir)


@pytest.mark.parametrize("target", ["/escape", "/abs/sub"])
def test_tmpfs_through_a_symlink_out_of_the_root_is_refused(
    escape_engine: ContainerEngine, escape_target: Path, storage_dir: Path, target: str
) -> None:
    before = snapshot(storage_dir)
    with pytest.raises(LaunchError) as failure:
        escape_engine.containers.run(
            sh("true", image="escapebox", tmpfs=[TmpfsMount(target=target)])
        )
    assert failure.value.step == "tmpfs"
    assert os.listdir(escape_target) == []
    with open("/proc/self/mountinfo") as f:
        assert str(escape_target) not in f.read()
    assert_nothing_new(before, storage_dir)


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
def test_volume_source_swapped_for_a_symlink_before_start_is_refused(
    engine: ContainerEngine, storage_dir: Path, level: IsolationType
) -> None:
    """The source is resolved when the container is made; a symlink put in its place
    before start (here to another host directory) is not followed: the start fails
    at the bind step, before the command runs, and the ``--rm`` container goes."""
    with host_tmpdir() as base, host_tmpdir() as outside:
        (outside / "marker").write_text("host only\n")
        source = base / "source"
        source.mkdir()
        before = snapshot(storage_dir)
        container = engine.containers.create(
            sh(
                "cat /data/marker; echo escaped > /data/written",
                isolation=level,
                volumes=[Volume(source=str(source), target="/data")],
            )
        )
        try:
            source.rmdir()
            source.symlink_to(outside)
            with pytest.raises(LaunchError) as failure:
                container.start()
        finally:
            with contextlib.suppress(ContainerNotFoundError):
                container.remove(force=True)
        assert failure.value.step == "bind"
        assert failure.value.errno == errno.ELOOP
        assert failure.value.exit_code == 125
        message = str(failure.value)
        assert f"volume {source} -> /data" in message
        assert "symlink" in message
        assert "refusing to follow it" in message
        assert sorted(os.listdir(outside)) == ["marker"]
        assert source.readlink() == outside  # left as it was found
        with pytest.raises(ContainerNotFoundError):
            engine.containers.get(container.id)
        assert_nothing_new(before, storage_dir)


# -- the python template ---------------------------------------------------------


def _host_python_version() -> str:
    """The host's python3 version as the container prints it (the same /usr)."""
    return subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


PYTHON_SCRIPT = r"""
echo "version=$(python3 -c 'import sys; print(sys.version_info[:2])')"
echo "cwd=$(pwd)"
echo "home=$HOME"
# Opened for appending, nothing written: were /usr writable, the host's file is unchanged.
echo "usr=$( (: >> /usr/lib/os-release) 2>&1 && echo writable)"
echo "home_write=$(touch /home/bot/f 2>&1 && echo written)"
echo "tmp_write=$(touch /tmp/f 2>&1 && echo written)"
echo "user=$(id -un)"
echo --- mountinfo
cat /proc/self/mountinfo
"""


@pytest.mark.parametrize("user", [None, "bot"])
@pytest.mark.parametrize("level", [STANDARD, STRICT], ids=lambda lv: lv.value)
def test_python_template(engine: ContainerEngine, level: IsolationType, user: str | None) -> None:
    out = output_of(engine, sh(PYTHON_SCRIPT, image=PYTHON, isolation=level, user=user))
    head, _, mounts = out.partition("--- mountinfo\n")
    found = facts(head)
    assert found["version"] == _host_python_version()
    assert found["cwd"] == "/home/bot"
    assert found["home"] == "/home/bot"
    assert "ro" in mountinfo(mounts)["/usr"].options
    if level is STANDARD and user is None:
        assert EROFS_TEXT in found["usr"]  # root could write, but for the mount
    else:
        assert found["usr"] != "writable"  # permission checks come before EROFS
    assert found["home_write"] == "written"
    assert found["tmp_write"] == "written"
    assert found["user"] == (user or "root")


def test_python_runs_a_program(engine: ContainerEngine) -> None:
    config = sh(
        "python3 -c 'import sys, platform; print(sys.version); print(platform.node())'",
        image=PYTHON,
        isolation=STRICT,
        hostname="pybot",
    )
    lines = output_of(engine, config).splitlines()
    assert lines[0].split()[0][0].isdigit()
    assert lines[1] == "pybot"

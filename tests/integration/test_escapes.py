"""Issue 11's escapes, tried as an attacker would from inside a container (items 3-9
and the weak defaults; docs/security.md lists each threat and its test).

Each test runs the attack at the level concerned and passes because it fails: a
host device node made with mknod cannot be opened, no other host user reaches
anything under the storage directory, uid -1 is refused, a fork bomb stops at the
default pids limit, io_uring is refused by seccomp. Loop devices are made on image
files of the test's own and detached after.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import LEVELS, assert_nothing_new, host_tmpdir, output_of, sh, snapshot
from lifecycle_support import (
    Containers,
    codex32,
    containers,  # noqa: F401 - a pytest fixture, used by name
)

from codex32 import (
    ContainerConfig,
    ContainerEngine,
    DeviceMapping,
    IsolationType,
    TmpfsMount,
    Volume,
)
from codex32.config.container import DEFAULT_PIDS_LIMIT
from codex32.errors import ConfigError, LaunchError

pytestmark = pytest.mark.root

_, STANDARD, STRICT = LEVELS
SECURED = pytest.mark.parametrize("level", [STANDARD, STRICT], ids=["standard", "strict"])

#: A writable place whose mount is not nodev, per level: STANDARD's overlay root;
#: STRICT's root is read-only and its tmpfs are nodev (user-namespaced besides).
WRITABLE = {STANDARD: "", STRICT: "/tmp"}


def run(engine: ContainerEngine, config: ContainerConfig) -> tuple[int, str]:
    result = engine.containers.run(config)
    return result.exit_code, (result.output + result.error_output).decode(errors="replace")


# -- item 3: host devices ----------------------------------------------------------


@SECURED
def test_mknod_of_the_kernel_log_does_not_reach_the_host(
    engine: ContainerEngine, level: IsolationType
) -> None:
    token = f"c32probe-{secrets.token_hex(6)}"
    where = WRITABLE[level]
    script = (
        f"for node in /dev/km {where}/km; do mknod $node c 1 11; "
        f'[ -c $node ] && echo "<6>{token}" > $node && echo "WROTE $node"; done; true'
    )
    _code, output = run(engine, sh(script, isolation=level, network="none"))
    assert "WROTE" not in output, output
    host_log = subprocess.run(["dmesg"], capture_output=True, text=True, check=True).stdout
    assert token not in host_log


@pytest.fixture
def loop_devices() -> Iterator[list[tuple[str, bytes, Path]]]:
    """Two loop devices on image files, each starting with a secret of its own."""
    made: list[tuple[str, bytes, Path]] = []
    with host_tmpdir(0o700) as directory:
        try:
            for index in range(2):
                secret = f"SECRET-{index}-{secrets.token_hex(8)}".encode()
                image = directory / f"secret{index}.img"
                image.write_bytes(secret + bytes(1 << 20))
                made.append((_attach(image), secret, image))
            yield made
        finally:
            for device, _secret, _image in made:
                subprocess.run(["losetup", "-d", device], check=False)


def _attach(image: Path) -> str:
    """A loop device over ``image`` (loading the loop module where it is not yet, as a
    fresh VM's kernel); a host that cannot make one skips, naming why."""
    command = ["losetup", "--find", "--show", str(image)]
    attach = subprocess.run(command, capture_output=True, text=True, check=False)
    if attach.returncode != 0 and not os.path.exists("/dev/loop-control"):
        subprocess.run(["modprobe", "loop"], capture_output=True, check=False)
        attach = subprocess.run(command, capture_output=True, text=True, check=False)
    if attach.returncode != 0:
        pytest.skip(f"cannot attach a loop device (losetup): {attach.stderr.strip()}")
    return attach.stdout.strip()


def _numbers(device: str) -> tuple[int, int]:
    rdev = os.stat(device).st_rdev
    return os.major(rdev), os.minor(rdev)


@SECURED
def test_a_host_block_device_is_neither_read_nor_written(
    engine: ContainerEngine, level: IsolationType, loop_devices: list[tuple[str, bytes, Path]]
) -> None:
    device, secret, image = loop_devices[0]
    major, minor = _numbers(device)
    before = image.read_bytes()
    where = WRITABLE[level]
    script = (
        f"for node in /dev/blk {where}/blk; do mknod $node b {major} {minor}; "
        "head -c 40 $node; "
        "[ -b $node ] && echo -n X | dd of=$node bs=1 seek=100000 conv=notrunc 2>/dev/null "
        "&& echo WROTE; done; true"
    )
    _code, output = run(engine, sh(script, isolation=level, network="none"))
    assert secret.decode() not in output, output
    assert "WROTE" not in output, output
    assert image.read_bytes() == before


def test_device_grants_that_device_only(
    engine: ContainerEngine, loop_devices: list[tuple[str, bytes, Path]]
) -> None:
    (given, secret, image), (other, other_secret, _) = loop_devices
    major, minor = _numbers(other)
    before = image.read_bytes()
    script = (
        "head -c 40 /dev/xvdc; echo; "
        "echo -n X | dd of=/dev/xvdc bs=1 seek=100000 conv=notrunc 2>/dev/null && echo WROTE; "
        f"mknod /other b {major} {minor}; head -c 40 /other; "
        "mknod /km c 1 11; echo x > /km && echo WROTE-KMSG; true"
    )
    config = sh(
        script,
        network="none",
        devices=[DeviceMapping(host_path=given, container_path="/dev/xvdc", permissions="r")],
    )
    _code, output = run(engine, config)
    assert secret.decode() in output, output  # read: granted
    assert "WROTE" not in output, output  # write: not granted, nor the kernel log
    assert other_secret.decode() not in output, output
    assert image.read_bytes() == before


def test_a_device_gone_since_create_fails_the_start_in_one_message(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    with host_tmpdir() as directory:
        node = directory / "null-twin"
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        container = containers.create(
            ContainerConfig(
                image="busybox",
                command=["true"],
                network="none",
                devices=[DeviceMapping(host_path=str(node), container_path="/dev/twin")],
            )
        )
        node.unlink()
        before = snapshot(storage_dir)
        with pytest.raises(LaunchError, match="null-twin: No such file") as caught:
            container.start()
        assert caught.value.step == "devices"
        assert_nothing_new(before, storage_dir)


def test_device_flag_refuses_what_is_not_a_device(storage_dir: Path) -> None:
    before = snapshot(storage_dir)
    proc = codex32(storage_dir, "run", "--rm", "--device", "/etc/passwd", "busybox", "true")
    assert proc.returncode == 125
    assert "is not a device node" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert_nothing_new(before, storage_dir)


def test_dev_is_nosuid_nodev_noexec(engine: ContainerEngine) -> None:
    output = output_of(engine, sh("grep ' /dev ' /proc/self/mountinfo", network="none"))
    options = output.split()[5].split(",")
    assert {"nosuid", "nodev", "noexec"} <= set(options), output


# -- items 4 and 5: the storage directory and other host users ---------------------

NOBODY_PROBE = r"""
import json, os, sys
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
reached = []
for path in json.load(sys.stdin):
    try:
        os.stat(path)
        reached.append(path)
    except PermissionError:
        pass
try:
    os.execv(sys.argv[1], [sys.argv[1], "id"])
except PermissionError:
    print(json.dumps(reached))
"""


def test_no_other_host_user_reaches_the_storage(
    engine: ContainerEngine, containers: Containers, storage_dir: Path
) -> None:
    # A STANDARD container plants a setuid copy of busybox in its upper layer and
    # holds a secret in its environment; a STRICT one runs (its root must still
    # reach its layers through the group).
    planter = containers.create(
        ContainerConfig(
            image="busybox",
            command=["sh", "-c", "cp /bin/busybox /e && chmod 4755 /e"],
            network="none",
            env={"TOKEN": "s3cr3t"},
        )
    )
    planter.start()
    assert planter.wait(timeout=30) == 0
    strict = containers.started(
        ContainerConfig(
            image="busybox",
            command=["sh", "-c", "echo up > /tmp/up; sleep 60"],
            isolation=STRICT,
        )
    )
    planted = storage_dir / "containers" / planter.id / "upper" / "e"
    assert planted.stat().st_mode & 0o4000
    for name in ("plan.json", "config.json", "state.json"):
        path = storage_dir / "containers" / planter.id / name
        assert path.stat().st_mode & 0o777 == 0o600, name
    assert "s3cr3t" in (storage_dir / "containers" / planter.id / "plan.json").read_text()
    below = [str(p) for p in storage_dir.rglob("*")]
    assert len(below) > 100  # templates, layers, records: all of it is tried
    probe = subprocess.run(
        ["/usr/bin/python3", "-c", NOBODY_PROBE, str(planted)],
        input=json.dumps(below), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr  # the exec was refused: no "uid=65534 euid=0"
    assert json.loads(probe.stdout) == [], "reachable by nobody"
    assert strict.status == "running"
    assert strict.exec_run(["cat", "/tmp/up"]).output == b"up\n"


# -- items 6 to 9: validation ------------------------------------------------------


@pytest.mark.parametrize("user", ["4294967295", "4294967295:1000", "0:4294967295", "4294967296"])
def test_uid_minus_one_is_refused_at_run_and_exec(
    engine: ContainerEngine, containers: Containers, storage_dir: Path, user: str
) -> None:
    before = snapshot(storage_dir)
    proc = codex32(storage_dir, "run", "--rm", "-u", user, "busybox", "id")
    assert proc.returncode == 125, proc.stdout
    assert "is out of range" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert_nothing_new(before, storage_dir)
    container = containers.started(
        ContainerConfig(image="busybox", command=["sleep", "60"], network="none")
    )
    with pytest.raises(ConfigError, match="out of range"):
        container.exec_run(["id", "-u"], user=user)


def test_a_tmpfs_below_a_volume_is_mounted_on_top(engine: ContainerEngine) -> None:
    with host_tmpdir() as data:
        (data / "from-volume").write_text("v")
        config = sh(
            "ls /data; grep ' /data/t ' /proc/self/mountinfo",
            network="none",
            volumes=[Volume(source=str(data), target="/data")],
            tmpfs=[TmpfsMount(target="/data/t")],
        )
        output = output_of(engine, config)
    assert "from-volume" in output
    assert " - tmpfs " in output, output


@pytest.mark.parametrize(
    "args",
    [
        ["-v", "/tmp:/proc"],
        ["-v", "/tmp:/proc/sys/kernel"],
        ["-v", "/tmp:/sys/firmware"],
        ["--tmpfs", "/"],
        ["--tmpfs", "/proc"],
        ["--tmpfs", "/dev"],
        ["-e", "A\nB=1"],
        ["-v", "/tmp:/data\n/x"],
        ["--tmpfs", "/run:size=1m\nmode=777"],
    ],
    ids=lambda a: repr(a).replace("\\", "|")[:40],
)
def test_bad_targets_and_line_breaks_are_refused_in_one_line(
    storage_dir: Path, args: list[str]
) -> None:
    # (a NUL cannot pass through execve: tests/unit/test_config.py refuses it in the API)
    before = snapshot(storage_dir)
    proc = codex32(storage_dir, "run", "--rm", *args, "busybox", "true")
    assert proc.returncode == 125, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert_nothing_new(before, storage_dir)


# -- weak defaults -----------------------------------------------------------------

FORK_BOMB = r"""
import os
r, w = os.pipe()
count = 0
while count < 3000:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    count += 1
print(count, flush=True)
"""


def test_a_fork_bomb_stops_at_the_default_pids_limit(engine: ContainerEngine) -> None:
    config = ContainerConfig(
        image="python", command=["python3", "-c", FORK_BOMB], auto_remove=True, network="none"
    )
    forked = int(output_of(engine, config).split()[-1])
    assert DEFAULT_PIDS_LIMIT - 10 <= forked < DEFAULT_PIDS_LIMIT


def test_strict_tmp_is_sized(engine: ContainerEngine) -> None:
    script = "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; df -k /tmp | tail -1"
    _code, output = run(engine, sh(script, isolation=STRICT))
    assert "No space left on device" in output, output
    assert output.split()[-5] == "65536", output  # df's size column, in KiB


IO_URING = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 8, params)  # io_uring_setup
print(fd, os.strerror(ctypes.get_errno()))
"""


@SECURED
def test_io_uring_is_refused(engine: ContainerEngine, level: IsolationType) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("the probe uses x86_64's syscall number")
    config = ContainerConfig(
        image="python", command=["python3", "-c", IO_URING], isolation=level,
        auto_remove=True, network="none",
    )  # fmt: skip
    assert output_of(engine, config).strip() == "-1 Operation not permitted"


def test_a_flood_of_output_is_rotated_by_default(
    engine: ContainerEngine, containers: Containers
) -> None:
    # 27 MB in 60 kB lines: past the default 20 MiB, the log must have rotated.
    script = (
        "line=$(head -c 60000 /dev/zero | tr '\\0' x); "
        'i=0; while [ $i -lt 450 ]; do echo "$line"; i=$((i+1)); done'
    )
    container = containers.started(
        ContainerConfig(image="busybox", command=["sh", "-c", script], network="none")
    )
    assert container.wait(timeout=60) == 0
    directory = storage_dir_of(engine) / "containers" / container.id
    files = sorted(p.name for p in directory.glob("container.log*"))
    assert files[:2] == ["container.log", "container.log.1"], files
    assert all((directory / f).stat().st_size <= 20 * 1024**2 for f in files)


def storage_dir_of(engine: ContainerEngine) -> Path:
    return engine.settings.storage_dir

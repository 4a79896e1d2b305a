"""Torn files, a full disk and a simulated reboot.

* A ``state.json``/``config.json`` a crash (or a hostile hand) tore: the damaged
  container is reported with one line naming it, the others carry on, ``rm -f``
  cleans it.
* A torn last line in ``events.jsonl`` or ``container.log`` (a writer killed
  mid-line): readers skip it, writers carry on.
* A full storage disk (a small tmpfs filled to the last byte) during create, start,
  logging and the monitor's state writes: a clear error, no corrupt record, and the
  engine works again once space is freed.
* A reboot: every engine and container process killed at once; ``recover()`` applies
  restart policies and removes ``--rm`` containers, as ``init_engine()`` promises.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from fault_support import monitors, recover
from helpers import SESSION_TAG, assert_nothing_new, session_cgroups, snapshot
from lifecycle_support import dead, eventually

from codex32 import (
    Codex32Error,
    Container,
    ContainerConfig,
    ContainerEngine,
    ContainerNotFoundError,
    ContainerState,
    RestartPolicy,
)

pytestmark = pytest.mark.root

LOOP = "trap 'exit 0' TERM; echo ready; while true; do sleep 0.05; done"


def _loop(name: str, **options: object) -> ContainerConfig:
    return ContainerConfig(
        image="busybox", name=name, command=["sh", "-c", LOOP], network="none", **options
    )


def _cli(storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEX32_STORAGE_DIR": str(storage)}
    return subprocess.run(
        [str(Path(sys.executable).with_name("codex32")), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# -- torn records -----------------------------------------------------------------

TORN = {
    "invalid-json": "{not json",
    "truncated": None,  # the first half of the real file
    "empty": "",
    "a-list": "[]",
}


@pytest.mark.parametrize("damage", sorted(TORN))
def test_torn_state_json_is_reported_and_removable(
    damage: str, engine: ContainerEngine, storage_dir: Path
) -> None:
    before = snapshot(storage_dir)
    good = engine.containers.create(_loop("torn-good"))
    bad = engine.containers.create(_loop("torn-bad"))
    state = storage_dir / "containers" / bad.id / "state.json"
    text = TORN[damage]
    state.write_text(state.read_text()[: len(state.read_text()) // 2] if text is None else text)
    try:
        listing = _cli(storage_dir, "ps", "-a")
        assert listing.returncode == 0, listing.stderr
        assert "torn-good" in listing.stdout
        complaint = [line for line in listing.stderr.splitlines() if line.strip()]
        assert len(complaint) == 1 and bad.id[:12] in complaint[0], listing.stderr
        assert "Traceback" not in listing.stderr
        recover(storage_dir)  # carries on past it
        removal = _cli(storage_dir, "rm", "-f", "torn-bad")
        assert removal.returncode == 0, removal.stderr
    finally:
        good.remove(force=True)
        with contextlib.suppress(Codex32Error):
            _cli(storage_dir, "rm", "-f", bad.id)
        if (storage_dir / "containers" / bad.id).exists():  # the test's own mess, not a pass
            import shutil

            shutil.rmtree(storage_dir / "containers" / bad.id)
            (storage_dir / "names" / "torn-bad").unlink(missing_ok=True)
    assert_nothing_new(before, storage_dir)


def test_torn_config_json_does_not_stop_the_others(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """A torn config.json: listing and recovery go on; ``rm -f`` removes it."""
    before = snapshot(storage_dir)
    good = engine.containers.create(_loop("tornc-good"))
    bad = engine.containers.create(_loop("tornc-bad"))
    (storage_dir / "containers" / bad.id / "config.json").write_text('{"image": "busy')
    try:
        listing = _cli(storage_dir, "ps", "-a")
        assert listing.returncode == 0, listing.stderr
        assert "tornc-good" in listing.stdout
        assert "Traceback" not in listing.stderr
        recover(storage_dir)
        removal = _cli(storage_dir, "rm", "-f", "tornc-bad")
        assert removal.returncode == 0, removal.stderr
        assert "Traceback" not in removal.stderr
    finally:
        good.remove(force=True)
        with contextlib.suppress(Codex32Error):
            engine.containers.get(bad.id).remove(force=True)
    assert_nothing_new(before, storage_dir)


def test_torn_event_and_log_lines_are_skipped(engine: ContainerEngine, storage_dir: Path) -> None:
    """A writer killed mid-line leaves half a line: readers skip it, writers go on."""
    events = storage_dir / "events.jsonl"
    with open(events, "a") as f:
        f.write('{"time": 1, "type": "container", "act')  # no newline: torn
    container = engine.containers.run_detached(
        ContainerConfig(image="busybox", command=["sh", "-c", "echo one; echo two"], network="none")
    )
    try:
        assert container.wait(timeout=20) == 0
        log = storage_dir / "containers" / container.id / "container.log"
        with open(log, "a") as f:
            f.write('{"log":"thr')
        lines = container.logs().decode().splitlines(keepends=True)
        assert "one\n" in lines and "two\n" in lines, lines
        listed = _cli(storage_dir, "events", "--since", "0", "--until", str(int(time.time()) + 1),
                      "--filter", f"container={container.id}")  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "die" in listed.stdout and "Traceback" not in listed.stderr
    finally:
        container.remove(force=True)


# -- a full disk --------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB to be a storage directory, unmounted afterwards."""
    base = Path(os.environ.get("CODEX32_TEST_TMPDIR", "/tmp"))
    path = base / f"{SESSION_TAG}-fulldisk-{os.getpid()}"
    path.mkdir(mode=0o711)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0711", "tmpfs",
                    str(path)], check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte (a file of blocks, then one of bytes)."""
    filler = disk / "filler"
    block = b"\0" * 65536
    # Unbuffered: a buffered file would raise ENOSPC again as it closes.
    with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(block)
    with open(disk / "filler-bytes", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0")
    return filler


def _free(disk: Path) -> None:
    for name in ("filler", "filler-bytes"):
        (disk / name).unlink(missing_ok=True)


def test_full_disk_create_start_log_and_state(engine: ContainerEngine) -> None:
    """Create and start on a full disk fail with a clear error and leave no record;
    a running container's log and exit writes survive the full disk; all works again
    once space is freed."""
    with small_disk(48) as disk:
        settings = dataclasses.replace(engine.settings, storage_dir=disk)
        with ContainerEngine(settings=settings) as eng:
            try:
                # Built before the disk fills (the template is the image, not the test).
                eng.containers.run(ContainerConfig(image="busybox", command=["true"],
                                                   network="none", auto_remove=True))  # fmt: skip
                before = snapshot(disk)
                # A running container that logs all along.
                chatty = eng.containers.run_detached(ContainerConfig(
                    image="busybox", name="chatty", network="none",
                    command=["sh", "-c", "trap 'exit 7' TERM; i=0; while true; do "
                                         "i=$((i+1)); echo line$i; sleep 0.01; done"],
                ))  # fmt: skip
                assert eventually(lambda: b"line3" in chatty.logs(), 10)
                _fill(disk)
                # create: one clear error, nothing half-made.
                with pytest.raises(Codex32Error) as refused:
                    eng.containers.run_detached(_loop("on-full-disk"))
                assert "\n" not in str(refused.value).strip(), str(refused.value)
                assert not any(n == "on-full-disk" for n in os.listdir(disk / "names"))
                # The running container goes on (its log writes fail quietly); its
                # monitor is alive; stopping it writes its exit or it is marked lost.
                time.sleep(0.2)
                assert monitors(chatty.id), "the monitor died of the full disk"
                chatty.reload()
                assert chatty.status == "running"
                _free(disk)
                chatty.stop(timeout=5)
                chatty.reload()
                assert chatty.status == "exited" and chatty.record.exit_code is not None
                state = json.loads((disk / "containers" / chatty.id / "state.json").read_text())
                assert state["id"] == chatty.id
                chatty.remove(force=True)
                # Usable again.
                result = eng.containers.run(ContainerConfig(
                    image="busybox", command=["echo", "again"], network="none", auto_remove=True
                ))  # fmt: skip
                assert result.exit_code == 0 and result.output == b"again\n"
                assert_nothing_new(before, disk)
            finally:  # a failure must not leave a container (or a full disk) behind
                _free(disk)
                for leftover in eng.containers.list(all=True):
                    leftover.remove(force=True)


def test_full_disk_while_the_monitor_records_the_exit(engine: ContainerEngine) -> None:
    """The disk fills before a container exits: its state stays valid JSON (an atomic
    write that fails leaves the old one) and, once space is back, the record says
    exited with a code (known, or 255 marked lost)."""
    with small_disk(48) as disk:
        settings = dataclasses.replace(engine.settings, storage_dir=disk)
        with ContainerEngine(settings=settings) as eng:
            try:
                container = eng.containers.run_detached(_loop("exit-on-full"))
                assert eventually(lambda: b"ready" in container.logs(), 10)
                before_pid = container.record.pid
                assert before_pid
                _fill(disk)
                os.kill(before_pid, signal.SIGKILL)
                assert eventually(lambda: not monitors(container.id), 10)
                state = disk / "containers" / container.id / "state.json"
                json.loads(state.read_text())  # never torn
                _free(disk)
                container.reload()
                assert container.status == "exited"
                assert container.record.exit_code in (137, 255), container.record
                container.remove(force=True)
                assert not any(c.endswith(container.id) for c in session_cgroups())
            finally:  # a failure must not leave a container (or a full disk) behind
                _free(disk)
                for leftover in eng.containers.list(all=True):
                    leftover.remove(force=True)


def _ready(container: Container) -> bool:
    return b"ready" in container.logs()


def _unmonitored(container: Container) -> bool:
    return not monitors(container.id)


# -- a reboot -------------------------------------------------------------------------


def test_reboot_recovery_applies_restart_policies(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """Kill every process of every container and its monitor at once, then recover:
    ``always`` and ``on-failure`` ones run again under a fresh monitor, ``no`` ones are
    exited with the exit marked lost, ``--rm`` ones are gone."""
    before = snapshot(storage_dir)
    made = {
        "rb-always": engine.containers.run_detached(
            _loop("rb-always", restart_policy=RestartPolicy(name="always"))),
        "rb-onfail": engine.containers.run_detached(
            _loop("rb-onfail", restart_policy=RestartPolicy.parse("on-failure:3"))),
        "rb-no": engine.containers.run_detached(_loop("rb-no")),
        "rb-rm": engine.containers.run_detached(_loop("rb-rm", auto_remove=True)),
    }  # fmt: skip
    try:
        for c in made.values():
            assert eventually(partial(_ready, c), 10)
        old_pids = {n: c.record.pid for n, c in made.items()}
        # The "power cut": SIGKILL to every monitor first (so none records anything),
        # then to every process in the containers' cgroups.
        for c in made.values():
            for pid in monitors(c.id):
                os.kill(pid, signal.SIGKILL)
        victims = {int(pid) for pid in old_pids.values() if pid}
        for cgroup in session_cgroups():
            if any(cgroup.endswith(c.id) for c in made.values()):
                with contextlib.suppress(OSError):
                    victims |= {int(p) for p in Path(cgroup, "cgroup.procs").read_text().split()}
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for c in made.values():
            assert eventually(partial(_unmonitored, c), 10)
        assert eventually(lambda: all(dead(p) for p in victims), 10)
        recover(storage_dir)
        for name in ("rb-always", "rb-onfail"):
            c = engine.containers.get(name)
            assert c.status == "running", (name, c.record)
            assert c.record.pid != old_pids[name]
            assert monitors(c.id) == [c.record.monitor_pid]
        lost = engine.containers.get("rb-no")
        assert lost.status == "exited" and lost.record.exit_code == 255
        assert "unknown" in (lost.record.error or "")
        with pytest.raises(ContainerNotFoundError):
            engine.containers.get("rb-rm")
    finally:
        for name in made:
            with contextlib.suppress(ContainerNotFoundError):
                engine.containers.get(name).remove(force=True)
    assert_nothing_new(before, storage_dir)
    assert ContainerState.RUNNING  # (the enum is the public one)


def test_power_cut_tearing_an_rm_containers_files_still_removes_it(
    engine: ContainerEngine, storage_dir: Path
) -> None:
    """An ``--rm`` create fsyncs only state.json (docs/architecture.md, "State on
    disk"): after a power cut its config, plan, image and endpoint files may be torn.
    ``recover`` reads ``--rm`` from the record and removes it all the same, and its
    lease goes with it."""
    before = snapshot(storage_dir)
    config = ContainerConfig(
        image="busybox", name="pc-rm", command=["sh", "-c", LOOP], auto_remove=True
    )  # on the default bridge: a lease and an endpoint record
    container = engine.containers.run_detached(config)
    try:
        assert eventually(partial(_ready, container), 10)
        pid1 = container.record.pid
        for pid in monitors(container.id):
            os.kill(pid, signal.SIGKILL)
        assert pid1 is not None
        os.kill(pid1, signal.SIGKILL)  # PID 1 of its namespace: the rest goes with it
        assert eventually(partial(_unmonitored, container), 10)
        assert eventually(lambda: dead(pid1), 10)
        directory = storage_dir / "containers" / container.id
        for torn in ("config.json", "plan.json", "image.json", "network.json"):
            (directory / torn).write_text("")
        recover(storage_dir)
        with pytest.raises(ContainerNotFoundError):
            engine.containers.get("pc-rm")
    finally:
        with contextlib.suppress(Codex32Error):
            engine.containers.remove_damaged("pc-rm")
        with contextlib.suppress(Codex32Error):
            engine.containers.get("pc-rm").remove(force=True)
    assert_nothing_new(before, storage_dir)


def test_which_files_a_create_fsyncs(
    engine: ContainerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept container's create fsyncs everything it is made of, an ``--rm`` one only
    its record; both commit the record with its directory."""
    synced: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).split(".json")[0])
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    made_of = [".config", ".image", ".network", ".plan", ".bridge"]  # (.bridge: the lease)
    for auto_remove, expected in ((False, [*made_of, ".state"]), (True, [".state"])):
        synced.clear()
        config = ContainerConfig(image="busybox", command=["true"], auto_remove=auto_remove)
        container = engine.containers.create(config)
        try:
            ours = [name for name in synced if name in (*made_of, ".state", container.id)]
            assert sorted(ours[:-1]) == sorted(expected), auto_remove
            assert ours[-1] == container.id  # the directory, last: the create's commit
        finally:
            container.remove(force=True)

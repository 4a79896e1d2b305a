"""Containers are not the service's children: SIGKILL or SIGTERM it, they run on; a
restarted service sees them all, their logs and their exit codes."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from service.service_support import API, Service, busybox, wait_for

pytestmark = pytest.mark.root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigkill_then_restart_sees_every_container(
    storage_dir: Path, scratch: Path, policy_file: Path, service: Service
) -> None:
    workdir = scratch / "restart"
    workdir.mkdir()
    first = Service(storage_dir, workdir, policy=policy_file).start()
    names = {"long": "sleep 120", "short": "echo before; sleep 2; echo after; exit 7"}
    try:
        with first.client() as client:
            for name, script in names.items():
                response = client.post(
                    f"{API}/containers", params={"start": True}, json=busybox(script, name=name)
                )
                assert response.status_code == 201, response.text
            created = client.post(f"{API}/containers", json=busybox("true", name="not-started"))
            assert created.status_code == 201
            pids = {n: client.get(f"{API}/containers/{n}").json()["State"]["pid"] for n in names}

        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        assert all(_alive(pid) for pid in pids.values())
        assert wait_for(lambda: not _alive(pids["short"]), timeout=15)  # exits meanwhile
        assert _alive(pids["long"])

        second = Service(storage_dir, workdir, policy=policy_file).start()  # stale socket
        try:
            with second.client() as client:
                found = {
                    c["name"]: c
                    for c in client.get(f"{API}/containers", params={"all": True}).json()
                }
                assert found["long"]["status"] == "running"
                assert found["long"]["pid"] == pids["long"]
                assert found["short"]["status"] == "exited"
                assert found["short"]["exit_code"] == 7
                assert found["not-started"]["status"] == "created"
                assert client.get(f"{API}/containers/short/logs").text == "before\nafter\n"
        finally:
            assert second.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
        assert _alive(pids["long"])  # a clean stop leaves it running too
    finally:
        first.stop(signal.SIGKILL)
        with service.client() as client:
            for name in [*names, "not-started"]:
                client.delete(f"{API}/containers/{name}", params={"force": True})


def test_socket_activation_serves_the_socket_it_is_given(
    storage_dir: Path, scratch: Path, policy_file: Path
) -> None:
    """As codex32.socket starts it: the listening socket arrives as fd 3 (LISTEN_FDS)."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.skip("needs systemd-socket-activate (package systemd)")
    workdir = scratch / "activated"
    workdir.mkdir()
    socket_path = workdir / "api.sock"
    activated = Service(
        storage_dir,
        workdir,
        policy=policy_file,
        prefix=[activate, "-l", str(socket_path)],
        extra_args=["--host", f"unix://{workdir}/unused.sock"],
    )
    activated.start()
    try:
        assert not (workdir / "unused.sock").exists()
        assert "the socket systemd passed" in activated.log()
    finally:
        activated.stop()
    assert socket_path.exists()  # systemd's to remove, not the service's

"""Error answers (status, one message, kind, hint) and the policy's refusals (403)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from codex32 import Codex32Error, ContainerConfig, ContainerEngine, LaunchError
from service.service_support import API, Service, busybox, container, error_of

pytestmark = pytest.mark.root


def _create(service: Service, config: dict[str, Any]) -> Any:
    with service.client() as client:
        response = client.post(f"{API}/containers", json=config)
        if response.status_code == 201:  # not expected: leave nothing behind
            client.delete(f"{API}/containers/{response.json()['id']}", params={"force": True})
        return response


@pytest.mark.parametrize(
    ("config", "rule"),
    [
        ({"isolation": "minimal", "network": "none"}, "min_isolation"),
        ({"cap_add": ["SYS_ADMIN"]}, "allowed_capabilities"),
        ({"cap_add": ["ALL"]}, "allow_privileged"),
        ({"network": "host"}, "allow_host_network"),
        ({"resources": {"memory_bytes": 2 << 30}}, "limits.memory_bytes"),
        ({"resources": {"pids_limit": 5000}}, "limits.pids"),
        ({"resources": {"best_effort": True}}, "limits"),
    ],
)
def test_policy_refusals_name_the_rule(service: Service, config: dict[str, Any], rule: str) -> None:
    response = _create(service, busybox("true") | config)
    assert response.status_code == 403, response.text
    body = error_of(response)
    assert body["kind"] == "PolicyDenied" and body["rule"] == rule
    assert rule in body["message"] and body["hint"]


def test_policy_allows_what_it_lists(service: Service, scratch: Path) -> None:
    source = scratch / "allowed" / "data"
    source.mkdir(exist_ok=True)
    (source / "file").write_text("shared\n")
    volume = {"source": str(source), "target": "/data", "read_only": True}
    config = busybox("cat /data/file", cap_add=["NET_ADMIN"], volumes=[volume])
    with service.client() as client, container(client, config) as cid:
        assert client.post(f"{API}/containers/{cid}/wait").json()["exit_code"] == 0
        assert client.get(f"{API}/containers/{cid}/logs").text == "shared\n"


def test_volume_outside_the_roots_is_refused(service: Service, scratch: Path) -> None:
    response = _create(
        service, busybox("true", volumes=[{"source": str(scratch / "secret"), "target": "/s"}])
    )
    assert response.status_code == 403
    assert error_of(response)["rule"] == "volume_roots"


def test_symlink_out_of_the_roots_is_resolved_then_refused(service: Service, scratch: Path) -> None:
    link = scratch / "allowed" / "sneaky"
    link.symlink_to(scratch / "secret")
    try:
        response = _create(
            service, busybox("true", volumes=[{"source": str(link), "target": "/s"}])
        )
        assert response.status_code == 403
        body = error_of(response)
        assert body["rule"] == "volume_roots" and str(scratch / "secret") in body["message"]
    finally:
        link.unlink()


def test_script_image_outside_the_roots_is_refused(service: Service, scratch: Path) -> None:
    script = scratch / "secret" / "bot.py"
    script.write_text("print('hi')\n")
    response = _create(service, {"image": str(script), "network": "none"})
    assert response.status_code == 403
    assert error_of(response)["rule"] == "volume_roots"


@pytest.mark.parametrize("swap", ["source", "parent"])
def test_symlink_swapped_between_check_and_mount_is_not_followed(
    service: Service, engine: ContainerEngine, scratch: Path, swap: str
) -> None:
    """The create's check passes on a real directory; then a symlink to a secret takes
    its place (or its parent's). The service's start checks again (403); and a start
    that got past a check before the swap (here: the engine's own, with no check at
    all) binds the descriptor of the path resolved at create, opened refusing
    symlinks, so it fails: the secret is never bound."""
    parent = scratch / "allowed" / f"swap-{swap}"
    source = parent / "data"
    source.mkdir(parents=True)
    (source / "file").write_text("allowed\n")
    decoy_parent = scratch / f"decoy-{swap}"
    (decoy_parent / "data").mkdir(parents=True)
    (decoy_parent / "data" / "file").write_text("SECRET\n")
    config = busybox("cat /data/file", volumes=[{"source": str(source), "target": "/data"}])
    try:
        with service.client() as client, container(client, config, start=False) as cid:
            if swap == "source":
                source.rename(parent / "data.moved")
                source.symlink_to(scratch / "secret")
            else:
                parent.rename(parent.with_name(parent.name + ".moved"))
                parent.symlink_to(decoy_parent)
            response = client.post(f"{API}/containers/{cid}/start")
            assert response.status_code == 403, response.text
            assert error_of(response)["rule"] == "volume_roots"
            with pytest.raises(LaunchError, match="symlink"):
                engine.containers.get(cid).start()
            logs = client.get(f"{API}/containers/{cid}/logs").text
            assert "SECRET" not in logs and "not for callers" not in logs
    finally:
        if parent.is_symlink():
            parent.unlink()


def test_not_found_answers(service: Service) -> None:
    with service.client() as client:
        for path, kind in [
            (f"{API}/containers/nope", "ContainerNotFoundError"),
            (f"{API}/images/nope", "ImageNotFoundError"),
            (f"{API}/networks/nope", "NetworkError"),
            (f"{API}/nothing-here", "NotFound"),
        ]:
            response = client.get(path)
            assert response.status_code == 404, (path, response.text)
            assert error_of(response)["kind"] == kind
        unknown_image = client.post(f"{API}/containers", json={"image": "nope"})
        assert unknown_image.status_code == 404


def test_conflicts(service: Service) -> None:
    with service.client() as client, container(client, busybox("sleep 30", name="dup")) as cid:
        taken = client.post(f"{API}/containers", json=busybox("true", name="dup"))
        assert taken.status_code == 409 and "already in use" in error_of(taken)["message"]
        running = client.delete(f"{API}/containers/{cid}")
        assert running.status_code == 409 and error_of(running)["kind"] == "StateError"
        assert error_of(running)["hint"]
        unpause = client.post(f"{API}/containers/{cid}/unpause")
        assert unpause.status_code == 409


def test_bad_requests(service: Service) -> None:
    with service.client() as client:
        for config in (
            busybox("true", bogus=1),
            busybox("true", volumes=[{"source": "relative", "target": "/x"}]),
            busybox("true", resources={"memory_bytes": 1024}),
            {"command": ["true"]},
        ):
            response = client.post(f"{API}/containers", json=config)
            assert response.status_code == 400, response.text
            body = error_of(response)
            assert body["message"].startswith("invalid configuration: ")
            assert "\n" not in body["message"]
        not_json = client.post(
            f"{API}/containers", content=b"{", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
        assert client.get(f"{API}/containers", params={"state": "bogus"}).status_code == 400
        with container(client, busybox("sleep 30")) as cid:
            bad_signal = client.post(f"{API}/containers/{cid}/kill", params={"signal": "NOPE"})
            assert bad_signal.status_code == 400 and "signal" in error_of(bad_signal)["message"]
            timed_out = client.post(f"{API}/containers/{cid}/wait", params={"timeout": 0.3})
            assert timed_out.status_code == 408 and error_of(timed_out)["kind"] == "Timeout"


def test_unenforceable_limit_is_422(service: Service) -> None:
    """blkio.weight needs CFQ/BFQ: on a kernel without either the limit cannot hold."""
    blkio = "/sys/fs/cgroup/blkio"
    if not os.path.isdir(blkio) or any(
        os.path.exists(f"{blkio}/{name}") for name in ("blkio.weight", "blkio.bfq.weight")
    ):
        pytest.skip("this host can enforce blkio weights (no limit left to refuse)")
    with service.client() as client:
        response = client.post(
            f"{API}/containers",
            params={"start": True},
            json=busybox("true", resources={"blkio_weight": 300}),
        )
        if response.status_code == 201:
            client.delete(f"{API}/containers/{response.json()['id']}", params={"force": True})
        assert response.status_code == 422, response.text
        assert "blkio.weight" in error_of(response)["message"]
        left = client.get(f"{API}/containers", params={"all": True}).json()
        assert not [c for c in left if c["status"] == "created"]  # the failed create is gone


def test_an_internal_failure_is_a_500_without_a_traceback(
    storage_dir: Path, scratch: Path, policy_file: Path
) -> None:
    """A container whose plan went missing on disk (not an engine error): the answer is
    one JSON line; the traceback goes to the service's log only."""
    workdir = scratch / "internal"
    workdir.mkdir()
    own = Service(storage_dir, workdir, policy=policy_file).start()
    try:
        with own.client() as client, container(client, busybox("true"), start=False) as cid:
            (storage_dir / "containers" / cid / "plan.json").unlink()
            response = client.get(f"{API}/containers/{cid}/export")
            assert response.status_code == 500
            body = error_of(response)
            assert body["kind"] == "InternalError" and "FileNotFoundError" in body["message"]
            assert "\n" not in body["message"] and 'File "' not in response.text
        assert "Traceback" in own.log()  # for the operator
    finally:
        own.stop()


def test_containers_made_outside_the_service_are_held_to_the_policy(
    service: Service, engine: ContainerEngine
) -> None:
    """Root's CLI may make a MINIMAL container; a caller of the service may not start it,
    restart it or exec in it (that would be more than the policy allows), only stop,
    inspect or remove it."""
    config = ContainerConfig(
        image="busybox",
        command=["sleep", "60"],
        isolation="minimal",
        network="none",
        name="made-by-root",
    )
    made = engine.containers.run_detached(config)
    try:
        with service.client() as client:
            base = f"{API}/containers/made-by-root"
            for response in (
                client.post(f"{base}/exec", json={"command": ["true"]}),
                client.post(f"{base}/restart"),
            ):
                assert response.status_code == 403, response.text
                assert error_of(response)["rule"] == "min_isolation"
            with service.websocket(f"{base}/exec?cmd=sh") as ws:
                frame = json.loads(ws.recv(timeout=10))
                assert frame["status"] == 403 and frame["rule"] == "min_isolation"
            assert client.get(base).status_code == 200
            assert client.post(f"{base}/stop", params={"timeout": 1}).status_code == 204
            assert client.post(f"{base}/start").status_code == 403
            assert client.delete(base).status_code == 204
    finally:
        with contextlib.suppress(Codex32Error):
            made.remove(force=True)

"""docker-py (the real client, PyPI ``docker`` 7.x) against Codex-32's Docker socket.

Every call the issue lists, with ``version="auto"``, asserting what the calls return.
"""

from __future__ import annotations

import gc
import io
import tarfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import pytest
from docker_server import DockerSocket, docker_socket, wait_until

from codex32 import ContainerConfig, IsolationType

# docker-py never closes the response of a hijacked exec start (exec_api.exec_start keeps
# the socket it read from): its sockets are collected, not closed. That is the client's,
# not the server's, so those ResourceWarnings are ignored here, and collected after
# each test (see ``client``) so that they do not surface in another module's test.
pytestmark = [pytest.mark.root, pytest.mark.filterwarnings("ignore::ResourceWarning")]

_ = docker_socket  # the fixture, imported for this module

#: docker-py's stubs type what ``stream=``/``decode=``/``demux=`` change as unions the
#: tests would have to narrow at every call: the client is used untyped here.
Client = Any


@pytest.fixture
def client(docker_socket: DockerSocket) -> Iterator[Client]:
    c = docker.DockerClient(base_url=docker_socket.url, version="auto", timeout=60)
    yield c
    for container in c.containers.list(all=True):
        container.remove(force=True)
    c.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _names(client: Client) -> list[str]:
    return [c.name for c in client.containers.list(all=True)]


def test_ping_version_info(client: Client) -> None:
    assert client.ping() is True
    version = client.version()
    assert tuple(int(x) for x in version["ApiVersion"].split(".")) >= (1, 41)
    assert client.api.api_version == version["ApiVersion"]  # negotiated, then used
    assert version["Os"] == "linux"
    info = client.info()
    assert info["OSType"] == "linux" and "Containers" in info


def test_run_attached_returns_output_and_removes(client: Client) -> None:
    out = client.containers.run("busybox", ["sh", "-c", "echo hello; echo two"], remove=True)
    assert out == b"hello\ntwo\n"
    assert _names(client) == []


def test_run_failure_raises_container_error(client: Client) -> None:
    with pytest.raises(docker.errors.ContainerError) as caught:
        client.containers.run("busybox", ["sh", "-c", "echo bad >&2; exit 3"], remove=True)
    assert caught.value.exit_status == 3
    stderr: Any = caught.value.stderr  # bytes (the stubs say str)
    assert stderr == b"bad\n"
    assert _names(client) == []


def test_unknown_image_is_image_not_found(client: Client) -> None:
    with pytest.raises(docker.errors.ImageNotFound, match="No such image"):
        client.containers.run("no-such-image", "true", remove=True)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get("no-such-image")


def test_create_get_list_with_filters(client: Client) -> None:
    created = client.containers.create(
        "busybox", "sleep 30", name="dp-created", labels={"team": "bots"}
    )
    other = client.containers.run("busybox", "sleep 30", detach=True, labels={"team": "x"})
    assert client.containers.get("dp-created").id == created.id
    assert created.status == "created"
    running = [c.id for c in client.containers.list()]
    assert running == [other.id]
    every = {c.id for c in client.containers.list(all=True)}
    assert every == {created.id, other.id}
    labelled = client.containers.list(all=True, filters={"label": "team=bots"})
    assert [c.id for c in labelled] == [created.id]
    by_status = client.containers.list(all=True, filters={"status": "created"})
    assert [c.id for c in by_status] == [created.id]
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("no-such-container")


def test_verbs_change_the_state(client: Client) -> None:
    c = client.containers.create("busybox", ["sleep", "60"])
    c.start()
    c.reload()
    assert c.status == "running"
    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.reload()
    assert c.status == "running"
    first_start = c.attrs["State"]["StartedAt"]
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running" and c.attrs["State"]["StartedAt"] != first_start
    c.stop(timeout=1)
    c.reload()
    assert c.status == "exited" and c.attrs["State"]["ExitCode"] == 137
    c.remove()
    trapping = client.containers.run(
        "busybox",
        ["sh", "-c", "trap 'exit 5' USR1; while true; do sleep 0.05; done"],
        detach=True,
    )
    time.sleep(0.3)  # the trap is set
    trapping.kill(signal="SIGUSR1")
    assert trapping.wait(timeout=30)["StatusCode"] == 5
    trapping.reload()
    assert trapping.status == "exited"
    trapping.remove()
    assert _names(client) == []


def test_remove_force_kills_a_running_container(client: Client) -> None:
    c = client.containers.run("busybox", "sleep 60", detach=True)
    with pytest.raises(docker.errors.APIError) as caught:
        c.remove()
    assert caught.value.status_code == 409
    c.remove(force=True)
    assert _names(client) == []


def test_wait_returns_the_exit_code(client: Client) -> None:
    c = client.containers.run("busybox", ["sh", "-c", "sleep 0.3; exit 4"], detach=True)
    assert c.wait(timeout=30) == {"StatusCode": 4, "Error": None}


def test_detached_remove_is_done_by_the_server(client: Client) -> None:
    c = client.containers.run(
        "busybox", ["sh", "-c", "sleep 0.5; exit 2"], detach=True, remove=True
    )
    assert c.wait(condition="removed")["StatusCode"] == 2
    wait_until(lambda: _names(client) == [], what="the --rm container to go")


def test_logs_follow_stream_ends_at_exit(client: Client) -> None:
    c = client.containers.run(
        "busybox", ["sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done"], detach=True
    )
    following = c.logs(stream=True, follow=True)
    lines = list(following)
    following.close()  # docker-py leaves a consumed stream's socket open
    assert b"".join(lines) == b"line1\nline2\nline3\n"
    # readable after the exit; follow on an exited container ends
    assert c.logs() == b"line1\nline2\nline3\n"
    again = c.logs(stream=True, follow=True)
    assert b"".join(again) == b"line1\nline2\nline3\n"
    again.close()


def test_logs_timestamps_tail_since(client: Client) -> None:
    c = client.containers.run(
        "busybox", ["sh", "-c", "echo a; echo b >&2; sleep 1.2; echo c"], detach=True
    )
    c.wait()
    assert c.logs(tail=1) == b"c\n"
    assert c.logs(stdout=True, stderr=False) == b"a\nc\n"
    stamped = c.logs(timestamps=True, tail=2).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["b", "c"]
    assert all(line.split(" ", 1)[0].endswith("Z") for line in stamped)
    started = c.attrs["State"]["StartedAt"]  # before the start: everything
    assert started and c.logs(since=int(time.time()) - 3600) == b"a\nb\nc\n"
    assert c.logs(since=time.time() + 60) == b""


def test_exec_run_fifty_times_complete_output(client: Client) -> None:
    c = client.containers.run("busybox", "sleep 120", detach=True)
    for i in range(50):
        result = c.exec_run("echo hi")
        assert (result.exit_code, result.output) == (0, b"hi\n"), f"exec {i}: {result}"
    result = c.exec_run(["sh", "-c", "exit 9"])
    assert result.exit_code == 9


def test_exec_run_stream_demux(client: Client) -> None:
    c = client.containers.run("busybox", "sleep 60", detach=True)
    result = c.exec_run(["sh", "-c", "echo out; echo err >&2; echo out2"], stream=True, demux=True)
    chunks = list(result.output)
    result.output.close()  # docker-py leaves a consumed stream's socket open
    stdout = b"".join(o for o, _ in chunks if o)
    stderr = b"".join(e for _, e in chunks if e)
    assert (stdout, stderr) == (b"out\nout2\n", b"err\n")
    plain = c.exec_run(["sh", "-c", "echo out; echo err >&2"], demux=True)
    assert plain.output == (b"out\n", b"err\n")


def test_attrs_carry_what_clients_read(client: Client) -> None:
    c = client.containers.run(
        "busybox",
        ["sleep", "30"],
        detach=True,
        name="dp-attrs",
        environment={"A": "1"},
        labels={"k": "v"},
    )
    c.reload()
    attrs = c.attrs
    assert attrs["Id"] == c.id and attrs["Name"] == "/dp-attrs"
    assert ":" in attrs["Image"]
    state = attrs["State"]
    assert state["Status"] == "running" and state["Running"] is True
    assert state["OOMKilled"] is False and state["ExitCode"] == 0
    assert state["StartedAt"].endswith("Z") and state["FinishedAt"].startswith("0001")
    config = attrs["Config"]
    assert config["Tty"] is False and config["Labels"] == {"k": "v"}
    assert config["Cmd"] == ["sleep", "30"] and "A=1" in config["Env"]
    assert config["Image"] == "busybox:latest"
    assert attrs["HostConfig"]["LogConfig"]["Type"] == "json-file"
    assert "Networks" in attrs["NetworkSettings"]
    assert c.labels == {"k": "v"} and c.image.tags == ["busybox:latest"]


def test_stats_once_and_streamed(client: Client) -> None:
    c = client.containers.run("busybox", "sleep 60", detach=True)
    once = c.stats(stream=False)
    assert once["id"] == c.id and once["pids_stats"]["current"] >= 1
    assert once["memory_stats"]["usage"] > 0
    stream = c.stats(stream=True, decode=True)
    first, second = next(stream), next(stream)
    stream.close()
    assert (
        second["precpu_stats"]["cpu_usage"]["total_usage"]
        == (first["cpu_stats"]["cpu_usage"]["total_usage"])
    )


def test_top_and_export(client: Client) -> None:
    c = client.containers.run("busybox", ["sleep", "45"], detach=True)
    top = c.top()
    assert "PID" in top["Titles"]
    assert any("sleep 45" in row[-1] for row in top["Processes"])
    with tarfile.open(fileobj=io.BytesIO(b"".join(c.export()))) as tar:
        assert "bin/busybox" in tar.getnames()


def test_events_decoded_and_filtered(client: Client) -> None:
    since = time.time() - 1
    c = client.containers.run("busybox", "true", detach=True)
    c.wait()
    events = client.events(
        decode=True, since=since, until=time.time() + 1, filters={"container": c.id}
    )
    actions = [e["Action"] for e in events]
    assert actions[:3] == ["create", "start", "die"]
    live = client.events(decode=True, filters={"event": "start"})
    other = client.containers.run("busybox", "true", detach=True)
    seen = next(live)
    live.close()
    assert (seen["Type"], seen["Action"], seen["Actor"]["ID"]) == ("container", "start", other.id)
    other.wait()


def test_images_list_and_get(client: Client) -> None:
    tags = [t for image in client.images.list() for t in image.tags]
    assert "busybox:latest" in tags
    image = client.images.get("busybox")
    assert image.tags == ["busybox:latest"] and image.id.startswith("sha256:")


def test_networks_list_create_get_remove(client: Client) -> None:
    names = [n.name for n in client.networks.list()]
    assert {"host", "none"} <= set(names)
    network = client.networks.create("dp-net")
    try:
        assert client.networks.get(network.id).name == "dp-net"
        assert client.networks.get("dp-net").attrs["Driver"] == "bridge"
    finally:
        network.remove()
    assert "dp-net" not in [n.name for n in client.networks.list()]


def test_policy_refusals_are_api_errors(client: Client) -> None:
    for kwargs in (
        {"privileged": True},
        {"volumes": ["/etc:/host-etc"]},
        {"cap_add": ["NET_ADMIN"]},
        {"labels": {"codex32.isolation": "minimal"}},
    ):
        with pytest.raises(docker.errors.APIError, match="denied by policy") as caught:
            client.containers.run("busybox", "true", remove=True, **kwargs)
        assert caught.value.status_code == 403, kwargs
    assert _names(client) == []


def test_allowed_bind_and_isolation_label(client: Client, docker_socket: DockerSocket) -> None:
    (docker_socket.volume_root / "hello.txt").write_text("from the host\n")
    out = client.containers.run(
        "busybox",
        ["cat", "/data/hello.txt"],
        remove=True,
        volumes=[f"{docker_socket.volume_root}:/data:ro"],
        labels={"codex32.isolation": "strict"},
    )
    assert out == b"from the host\n"


def test_fields_it_cannot_honour_are_refused_by_name(client: Client) -> None:
    with pytest.raises(docker.errors.APIError, match=r"HostConfig\.Dns") as caught:
        client.containers.run("busybox", "true", dns=["1.1.1.1"], remove=True)
    assert caught.value.status_code == 400
    with pytest.raises(docker.errors.APIError, match=r"HostConfig\.Devices"):
        client.containers.create("busybox", "true", devices=["/dev/null:/dev/x:rwm"])
    assert _names(client) == []


def test_mutations_are_audited_with_the_peer(client: Client, docker_socket: DockerSocket) -> None:
    c = client.containers.create("busybox", "true", name="dp-audited")
    c.remove()
    entries = [e for e in docker_socket.audit.read() if e.get("api") == "docker"]
    create = [e for e in entries if e["action"] == "create" and e.get("target") == "dp-audited"]
    assert create and create[-1]["status"] == 201 and create[-1]["who"]["uid"] == 0


def test_containers_made_elsewhere_are_held_to_the_policy(
    client: Client, docker_socket: DockerSocket
) -> None:
    """One made by root's CLI with more than the policy allows (MINIMAL) is not started
    through the socket, as on the native API; inspecting and removing it are allowed."""
    made = docker_socket.engine.containers.create(
        ContainerConfig(
            image="busybox",
            command=["sleep", "30"],
            isolation=IsolationType.MINIMAL,
            network="none",
        )
    )
    container = client.containers.get(made.id)
    for verb in (container.start, container.restart):
        with pytest.raises(docker.errors.APIError, match="min_isolation") as caught:
            verb()
        assert caught.value.status_code == 403
    assert container.attrs["State"]["Status"] == "created"
    container.remove()


def test_a_terminal_makes_raw_streams(client: Client) -> None:
    """With a terminal, logs and exec output are the terminal's bytes, unframed."""
    c = client.containers.run("busybox", ["sh", "-c", "echo hi; sleep 30"], detach=True,
                              tty=True)  # fmt: skip
    wait_until(lambda: c.logs() == b"hi\r\n", what="the terminal's output in the log")
    result = c.exec_run(["sh", "-c", "tty; echo out"], tty=True)
    lines = result.output.decode().splitlines()
    assert result.exit_code == 0 and lines[0].startswith("/dev/pts/") and lines[1] == "out"

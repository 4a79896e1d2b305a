"""Docker's create body -> ContainerConfig: what is mapped, ignored and refused."""

from __future__ import annotations

from typing import Any

import pytest

from codex32 import IsolationType
from codex32.service.docker.mapping import image_name, to_config
from codex32.service.docker.wire import DockerAPIError, check_version, moby_bool


def _config(body: dict[str, Any], **defaults: Any) -> Any:
    return to_config(
        {"Image": "busybox", **body},
        "n1",
        default_isolation=defaults.get("isolation"),
        default_network=defaults.get("network"),
    )


def _refused(body: dict[str, Any]) -> str:
    with pytest.raises(DockerAPIError) as caught:
        _config(body)
    assert caught.value.status == 400
    return caught.value.message


def test_cli_body_with_zero_values_maps() -> None:
    config = _config(
        {
            "Cmd": ["echo", "hi"],
            "Entrypoint": None,
            "Env": ["A=1", "UNSET"],
            "Tty": True,
            "OpenStdin": True,
            "AttachStdin": True,
            "Labels": {"k": "v"},
            "Volumes": None,
            "ExposedPorts": {},
            "HostConfig": {
                "AutoRemove": True,
                "NetworkMode": "default",
                "Dns": [],
                "ShmSize": 0,
                "ConsoleSize": [24, 80],
                "Privileged": False,
                "Isolation": "",
                "IpcMode": "",
                "LogConfig": {"Type": "", "Config": {}},
                "RestartPolicy": {"Name": "no"},
                "MemorySwappiness": None,
                "CgroupnsMode": "private",
                "PidsLimit": 0,
            },
        },
        network="none",
    )
    assert config.command == ["echo", "hi"] and config.env == {"A": "1"}
    assert config.tty and config.auto_remove and config.labels == {"k": "v"}
    assert config.network == "none" and config.name == "n1"
    assert config.resources.pids_limit is None


def test_resources_mounts_and_ports() -> None:
    config = _config(
        {
            "HostConfig": {
                "Binds": ["/tmp:/data:ro"],
                "Tmpfs": {"/run": "size=1m"},
                "Memory": 64 * 1024**2,
                "NanoCpus": 500_000_000,
                "CpuShares": 512,
                "PidsLimit": 50,
                "CapDrop": ["NET_RAW"],
                "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
                "ReadonlyRootfs": True,
                "Init": True,
                "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                "NetworkMode": "bridge",
                "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
            },
            "Volumes": {"/data": {}},
        }
    )
    assert [(v.target, v.read_only) for v in config.volumes] == [("/data", True)]
    assert config.tmpfs[0].target == "/run" and config.tmpfs[0].size_bytes == 1024**2
    resources = config.resources
    assert (resources.memory_bytes, resources.cpus, resources.cpu_shares) == (
        64 * 1024**2,
        0.5,
        512,
    )
    assert resources.pids_limit == 50 and config.cap_drop == ["CAP_NET_RAW"]
    assert config.read_only and config.init and config.ulimits[0].hard == 200
    assert (config.ports[0].host_port, config.ports[0].container_port) == (8080, 80)
    assert config.restart_policy.maximum_retry_count == 2


def test_privileged_becomes_every_capability_for_the_policy() -> None:
    assert _config({"HostConfig": {"Privileged": True}}).cap_add == ["ALL"]


def test_isolation_from_the_label_or_the_default() -> None:
    assert _config({"Labels": {"codex32.isolation": "strict"}}).isolation is IsolationType.STRICT
    assert _config({}, isolation=IsolationType.STRICT).isolation is IsolationType.STRICT
    assert "codex32.isolation" in _refused({"Labels": {"codex32.isolation": "max"}})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"HostConfig": {"Dns": ["1.1.1.1"]}}, "HostConfig.Dns"),
        ({"HostConfig": {"Devices": [{"PathOnHost": "/dev/null"}]}}, "HostConfig.Devices"),
        ({"HostConfig": {"IpcMode": "host"}}, "HostConfig.IpcMode"),
        ({"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}, "seccomp=unconfined"),
        ({"HostConfig": {"LogConfig": {"Type": "syslog"}}}, "LogConfig.Type"),
        ({"HostConfig": {"Binds": ["named:/data"]}}, "named volumes"),
        ({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": ""}]}}}, "random host port"),
        ({"HostConfig": {"Mounts": [{"Type": "volume", "Target": "/x"}]}}, "Mounts type"),
        ({"Volumes": {"/anon": {}}}, "anonymous volumes"),
        ({"Healthcheck": {"Test": ["CMD", "true"]}}, "Healthcheck"),
        ({"StopSignal": "SIGNOPE"}, "stop_signal"),
    ],
)
def test_what_cannot_be_honoured_is_refused_by_name(body: dict[str, Any], named: str) -> None:
    assert named in _refused(body)


def test_image_names() -> None:
    assert image_name("busybox:latest") == image_name("docker.io/library/busybox") == "busybox"
    with pytest.raises(DockerAPIError) as caught:
        image_name("busybox:1.36")
    assert (caught.value.status, caught.value.message) == (404, "No such image: busybox:1.36")


def test_moby_booleans_and_versions() -> None:
    assert [moby_bool(v) for v in ("1", "True", "yes", "x")] == [True] * 4
    assert [moby_bool(v) for v in ("", "0", "no", "FALSE", "None")] == [False] * 5
    assert moby_bool(None, default=True) is True
    assert check_version("v1.41") == (1, 41)
    with pytest.raises(DockerAPIError, match="too new"):
        check_version("1.44")

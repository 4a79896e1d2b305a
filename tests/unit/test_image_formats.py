"""Image references, the platform choice, config -> ImageConfig, Docker's command rules."""

from __future__ import annotations

import pytest

from codex32._images import oci
from codex32._images.image import ImageConfig
from codex32._images.reference import parse_reference
from codex32._plan.plan import command_args
from codex32.config.container import ContainerConfig
from codex32.errors import ImageError


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("alpine", "docker.io", "library/alpine", "latest", None),
        ("alpine:3.20", "docker.io", "library/alpine", "3.20", None),
        ("bots/trader:1.2", "docker.io", "bots/trader", "1.2", None),
        ("localhost/trader", "localhost", "trader", "latest", None),
        ("localhost:5000/bots/trader:1", "localhost:5000", "bots/trader", "1", None),
        (
            "127.0.0.1:5000/a/b@sha256:" + "a" * 64,
            "127.0.0.1:5000",
            "a/b",
            None,
            "sha256:" + "a" * 64,
        ),
        ("ghcr.io/x/y:v1@sha256:" + "b" * 64, "ghcr.io", "x/y", "v1", "sha256:" + "b" * 64),
        ("index.docker.io/library/busybox", "docker.io", "library/busybox", "latest", None),
    ],
)
def test_references(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


def test_familiar_names_and_api_host() -> None:
    ref = parse_reference("alpine:3.20")
    assert ref.familiar() == "alpine:3.20" and str(ref) == "docker.io/library/alpine:3.20"
    assert ref.api_host == "registry-1.docker.io"
    assert parse_reference("localhost:5000/x:1").familiar() == "localhost:5000/x:1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Alpine", "invalid repository name"),
        ("a:b c", "invalid tag"),
        ("a@sha256:123", "invalid digest"),
        ("a@md5:" + "0" * 32, "invalid digest"),
        ("a//b", "invalid repository name"),
    ],
)
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_reference(text)


def index(*platforms: dict[str, str]) -> dict[str, object]:
    return {
        "manifests": [{"digest": f"sha256:{i}", "platform": p} for i, p in enumerate(platforms)]
    }


def test_platform_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        oci, "host_platform", lambda: {"os": "linux", "architecture": "arm", "variant": "v7"}
    )
    chosen = oci.choose_platform(
        index(
            {"os": "linux", "architecture": "amd64"},
            {"os": "linux", "architecture": "arm", "variant": "v6"},
            {"os": "linux", "architecture": "arm", "variant": "v7"},
        ),
        "x",
    )
    assert chosen["digest"] == "sha256:2"
    with pytest.raises(ImageError, match="offers: linux/amd64, windows/amd64"):
        oci.choose_platform(
            index(
                {"os": "linux", "architecture": "amd64"}, {"os": "windows", "architecture": "amd64"}
            ),
            "x",
        )


def test_schema1_and_odd_layers_refused() -> None:
    with pytest.raises(ImageError, match="schema 1"):
        oci.check_manifest({"schemaVersion": 1}, "x")
    manifest = {
        "schemaVersion": 2,
        "config": {"digest": "sha256:0"},
        "layers": [{"mediaType": "application/vnd.example.foo"}],
    }
    with pytest.raises(ImageError, match="unsupported type"):
        oci.check_manifest(manifest, "x")


def test_image_config_from_oci() -> None:
    config = oci.image_config(
        {
            "config": {
                "Entrypoint": ["/init"],
                "Cmd": ["serve"],
                "Env": ["A=1", "B=x=y"],
                "WorkingDir": "/app",
                "User": "bot",
                "StopSignal": "SIGINT",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                "Labels": {"k": "v"},
                "Healthcheck": {"Test": ["CMD", "true"]},
            }
        }
    )
    assert config.entrypoint == ("/init",) and config.command == ("serve",)
    assert config.env == {"A": "1", "B": "x=y"} and config.workdir == "/app"
    assert (config.user, config.stop_signal) == ("bot", "SIGINT")
    assert config.exposed_ports == ("53/udp", "80/tcp") and config.labels == {"k": "v"}
    assert config.healthcheck == {"Test": ["CMD", "true"]}
    assert oci.image_config({}).workdir == "/"


IMAGE = ImageConfig(command=("serve",), env={}, workdir="/", entrypoint=("/init",))


@pytest.mark.parametrize(
    ("command", "entrypoint", "expected"),
    [
        ([], None, ["/init", "serve"]),
        (["x"], None, ["/init", "x"]),
        ([], ["/bin/sh"], ["/bin/sh"]),  # --entrypoint drops the image's Cmd
        (["-c", "id"], ["/bin/sh"], ["/bin/sh", "-c", "id"]),
        (["echo", "hi"], [], ["echo", "hi"]),  # --entrypoint ""
        ([], [], []),
    ],
)
def test_command_rules(
    command: list[str], entrypoint: list[str] | None, expected: list[str]
) -> None:
    config = ContainerConfig(image="x", command=command, entrypoint=entrypoint)
    assert command_args(config, IMAGE) == expected


def test_config_takes_references() -> None:
    for image in ("alpine:3.20", "localhost:5000/a/b@sha256:" + "0" * 64, "sha256:" + "1" * 64):
        assert ContainerConfig(image=image).image == image
    with pytest.raises(ValueError, match="image reference"):
        ContainerConfig(image="bad image")

"""Pull from a real registry (Debian's docker-registry on 127.0.0.1) images that umoci
and skopeo made from the busybox template's tree, and run them at every level."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import LEVELS, output_of
from image_support import (
    Registry,
    blobs_and_layers,
    derive_image,
    make_oci_image,
    missing_tools,
    run_registry,
    run_token_service,
    skopeo_copy,
)

from codex32 import ContainerConfig, ContainerEngine, ImageError, IsolationType

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (setup.sh)"),
]


@pytest.fixture(scope="module")
def layout(engine: ContainerEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout with images v1, v2 (same base layer), user, entry, big."""
    rootfs = Path(engine.images.build("busybox", quiet=True).path)
    path = tmp_path_factory.mktemp("layout") / "oci"
    make_oci_image(
        path,
        "v1",
        rootfs,
        cmd=["sh", "-c", "echo default-cmd"],
        env=["GREETING=from-image", "KEEP=kept"],
        workdir="/home/bot",
        extra={"/etc/motd": "second layer\n"},
    )
    derive_image(path, "v1", "v2", {"/etc/motd": b"v2\n"})
    subprocess.run(["umoci", "config", "--image", f"{path}:v2", "--config.cmd=sh"], check=True)
    make_oci_image(path, "user", rootfs, cmd=["id", "-u"], user="1000:1000")
    make_oci_image(path, "entry", rootfs, cmd=["default"], entrypoint=["/bin/echo", "ep"])
    # a layer of incompressible data: its download takes long enough to interrupt
    derive_image(path, "v2", "big", {"/random.bin": os.urandom(6 << 20)})
    return path


@pytest.fixture(scope="module")
def registry(layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with run_registry(tmp_path_factory.mktemp("registry")) as reg:
        for tag in ("v1", "v2", "user", "entry", "big"):
            skopeo_copy(f"oci:{layout}:{tag}", f"docker://{reg.host}/test/bb:{tag}")
        yield reg


@pytest.fixture(scope="module")
def pulled(engine: ContainerEngine, registry: Registry) -> str:
    name = f"{registry.host}/test/bb:v1"
    engine.images.pull(name, insecure=True)
    return name


def run_out(
    engine: ContainerEngine, image: str, command: list[str] | None = None, **options: object
) -> str:
    options.setdefault("isolation", IsolationType.STANDARD)
    config = ContainerConfig.model_validate(
        {
            "image": image,
            "command": command or [],
            "auto_remove": True,
            "network": "none",
            **options,
        }
    )
    return output_of(engine, config)


@pytest.mark.parametrize("level", LEVELS, ids=[level.value for level in LEVELS])
def test_pulled_image_runs_at_every_level(
    engine: ContainerEngine, pulled: str, level: IsolationType
) -> None:
    script = (
        "echo $GREETING $KEEP; pwd; cat /etc/motd; stat -c %u:%g /bin/busybox; "
        "cat /proc/self/uid_map | awk '{print $2}'; echo written > /tmp/w && cat /tmp/w"
    )
    out = run_out(
        engine, pulled, ["sh", "-c", script], isolation=level, env={"GREETING": "from-run"}
    ).split("\n")
    assert out[:4] == ["from-run kept", "/home/bot", "second layer", "0:0"], out
    host_root = engine.settings.userns_uid_base if level is IsolationType.STRICT else 0
    assert out[4] == str(host_root)
    assert out[5] == "written"


def test_image_cmd_is_the_default(engine: ContainerEngine, pulled: str) -> None:
    assert run_out(engine, pulled) == "default-cmd\n"


def test_entrypoint_and_cmd_as_docker(engine: ContainerEngine, registry: Registry) -> None:
    image = f"{registry.host}/test/bb:entry"
    engine.images.pull(image, insecure=True)
    assert run_out(engine, image) == "ep default\n"
    assert run_out(engine, image, ["given"]) == "ep given\n"
    assert run_out(engine, image, entrypoint=["/bin/echo"]) == "\n"  # --entrypoint drops Cmd
    assert run_out(engine, image, ["echo", "own"], entrypoint=[]) == "own\n"


def test_image_user_and_override(engine: ContainerEngine, registry: Registry) -> None:
    image = f"{registry.host}/test/bb:user"
    engine.images.pull(image, insecure=True)
    for level in LEVELS:
        assert run_out(engine, image, isolation=level) == "1000\n"
    assert run_out(engine, image, user="0") == "0\n"


def test_pull_by_digest(engine: ContainerEngine, registry: Registry, pulled: str) -> None:
    first = engine.images.get(pulled)
    by_digest = first.digests[0]
    again = engine.images.pull(by_digest, insecure=True)
    assert again.id == first.id
    assert engine.images.get(by_digest).id == first.id


def test_layers_shared_on_disk(engine: ContainerEngine, registry: Registry, pulled: str) -> None:
    v2 = f"{registry.host}/test/bb:v2"
    engine.images.pull(v2, insecure=True)
    one, two = engine.images.inspect(pulled), engine.images.inspect(v2)
    base = one["RootFS"]["Layers"][0]
    assert two["RootFS"]["Layers"][0] == base and one["Id"] != two["Id"]
    layers = engine.settings.storage_dir / "images" / "layers"
    diff = layers / base.removeprefix("sha256:") / "diff"
    assert diff.is_dir()
    # the base is stored once: one unpacked tree (and one blob) for both images
    assert sorted(p.name for p in layers.iterdir()).count(base[7:]) == 1
    # and both containers' overlays use that same directory
    plans = []
    for image in (pulled, v2):
        container = engine.containers.create(ContainerConfig(image=image, command=["true"]))
        try:
            steps = json.loads((engine._store.directory(container.id) / "plan.json").read_text())
            overlay = next(s for s in steps["steps"] if s["op"] == "overlay")
            plans.append(
                {os.path.realpath(os.path.join(overlay["lower_base"], p)) for p in overlay["lower"]}
            )
        finally:
            container.remove(force=True)
    assert str(diff) in plans[0] & plans[1]


def test_plain_http_needs_insecure(engine: ContainerEngine, registry: Registry) -> None:
    with pytest.raises(ImageError, match="--insecure-registry"):
        engine.images.pull(f"{registry.host}/test/bb:v1")


def test_unknown_image_and_tag(engine: ContainerEngine, registry: Registry) -> None:
    with pytest.raises(ImageError, match="not found"):
        engine.images.pull(f"{registry.host}/test/bb:nope", insecure=True)
    with pytest.raises(ImageError, match="not found"):
        engine.images.pull(f"{registry.host}/test/none:v1", insecure=True)


def test_index_picks_the_host_platform(engine: ContainerEngine, registry: Registry) -> None:
    base = f"http://{registry.host}/v2/test/bb/manifests"
    accept = "application/vnd.oci.image.manifest.v1+json"
    v1 = httpx.get(f"{base}/v1", headers={"Accept": accept})
    v2 = httpx.get(f"{base}/v2", headers={"Accept": accept})
    from codex32._images.oci import host_platform

    here = host_platform()
    other = "arm64" if here["architecture"] != "arm64" else "amd64"

    def descriptor(response: httpx.Response, arch: str) -> dict[str, object]:
        return {
            "mediaType": accept,
            "size": len(response.content),
            "digest": response.headers["Docker-Content-Digest"],
            "platform": {"os": "linux", "architecture": arch},
        }

    def put(tag: str, manifests: list[dict[str, object]]) -> None:
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }
        kind = "application/vnd.oci.image.index.v1+json"
        reply = httpx.put(
            f"{base}/{tag}", content=json.dumps(index), headers={"Content-Type": kind}
        )
        assert reply.status_code == 201, reply.text

    put("multi", [descriptor(v2, other), descriptor(v1, here["architecture"])])
    put("foreign", [descriptor(v1, other)])
    pulled = engine.images.pull(f"{registry.host}/test/bb:multi", insecure=True)
    assert pulled.id == engine.images.pull(f"{registry.host}/test/bb:v1", insecure=True).id
    with pytest.raises(ImageError, match=f"no image for this host's platform.*linux/{other}"):
        engine.images.pull(f"{registry.host}/test/bb:foreign", insecure=True)


def test_interrupted_pull_resumes(engine: ContainerEngine, registry: Registry) -> None:
    image = f"{registry.host}/test/bb:big"
    seen: dict[str, int] = {}

    class PullCutError(Exception):
        pass

    def interrupt(digest: str, done: int, total: int) -> None:
        if total > 4 << 20 and done > 2 << 20:
            seen[digest] = done
            raise PullCutError

    with pytest.raises(PullCutError):
        engine.images.pull(image, insecure=True, progress=interrupt)
    with pytest.raises(ImageError):
        engine.images.get(image)  # no partial image
    (digest,) = seen
    partial = engine.settings.storage_dir / "images" / "blobs" / "partial" / digest[7:]
    assert partial.stat().st_size > 2 << 20
    assert not (engine.settings.storage_dir / "images" / "blobs" / "sha256" / digest[7:]).exists()
    starts: dict[str, int] = {}

    def record(digest: str, done: int, total: int) -> None:
        starts.setdefault(digest, done)

    engine.images.pull(image, insecure=True, progress=record)
    assert starts[digest] >= 2 << 20  # resumed where it stopped, not from 0
    assert run_out(engine, image, ["sh", "-c", "wc -c < /random.bin"]) == f"{6 << 20}\n"


def test_corrupt_partial_is_not_trusted(engine: ContainerEngine, registry: Registry) -> None:
    """A partial file that is not a prefix of the blob fails the digest check; it is
    dropped and the next pull succeeds."""
    image = f"{registry.host}/test/bb:v2"
    engine.images.pull(image, insecure=True)
    layer = engine.images.inspect(image)["Layers"][-1]["digest"]
    engine.images.remove(image)
    store = engine.settings.storage_dir / "images" / "blobs"
    (store / "sha256" / layer[7:]).unlink(missing_ok=True)
    (store / "partial" / layer[7:]).write_bytes(b"garbage" * 10)
    with pytest.raises(ImageError, match="digest"):
        engine.images.pull(image, insecure=True)
    assert not (store / "partial" / layer[7:]).exists()
    assert engine.images.pull(image, insecure=True).tags


def test_rmi_refuses_a_used_image_then_removes(
    engine: ContainerEngine, registry: Registry, tmp_path: Path
) -> None:
    image = f"{registry.host}/test/bb:user"
    engine.images.pull(image, insecure=True)
    engine.images.tag(image, f"{registry.host}/test/rmi:only")
    other = f"{registry.host}/test/rmi:only"
    container = engine.containers.create(ContainerConfig(image=other))
    try:
        # two names: removing one untags it
        assert engine.images.remove(image) == [f"untagged {image}"]
        with pytest.raises(ImageError, match=f"used by container.*{container.name}"):
            engine.images.remove(other)
    finally:
        container.remove(force=True)
    blobs_before, _ = blobs_and_layers(engine.settings.storage_dir)
    removed = engine.images.remove(other)
    assert any(r.startswith("deleted sha256:") for r in removed)
    with pytest.raises(ImageError, match="no image named"):
        engine.images.get(other)
    blobs_after, layers_after = blobs_and_layers(engine.settings.storage_dir)
    assert blobs_after < blobs_before
    # the shared busybox base stays: other images use it
    v1 = engine.images.inspect(f"{registry.host}/test/bb:v1")
    assert v1["RootFS"]["Layers"][0][7:] in layers_after


def test_basic_auth_and_login(
    engine: ContainerEngine, layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with run_registry(tmp_path_factory.mktemp("authreg"), user="bot") as reg:
        skopeo_copy(f"oci:{layout}:v2", f"docker://{reg.host}/private/bb:1", *reg.creds_args())
        image = f"{reg.host}/private/bb:1"
        with pytest.raises(ImageError, match="asks for a login"):
            engine.images.pull(image, insecure=True)
        with pytest.raises(ImageError, match=r"login to .* failed"):
            engine.images.login(reg.host, "bot", "wrong", insecure=True)
        engine.images.login(reg.host, "bot", "bot-pw", insecure=True)
        auth = engine.settings.storage_dir / "auth.json"
        assert stat.S_IMODE(auth.stat().st_mode) == 0o600
        try:
            assert image in engine.images.pull(image, insecure=True).tags
            assert run_out(engine, image, ["cat", "/etc/motd"]) == "v2\n"
        finally:
            assert engine.images.logout(reg.host)
            engine.images.remove(image)


def test_token_auth_as_docker_hub(
    engine: ContainerEngine, layout: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The registry trusts tokens signed by a token service (Docker Hub's scheme): the
    client follows the Bearer challenge, with the saved credentials once logged in."""
    work = tmp_path_factory.mktemp("tokenreg")
    with (
        run_token_service(work, "hub", "hub-pw") as tokens,
        run_registry(work / "registry", token=tokens) as reg,
    ):
        image = f"{reg.host}/private/tok:1"
        skopeo_copy(f"oci:{layout}:v2", f"docker://{image}", "--dest-creds=hub:hub-pw")
        with pytest.raises(ImageError, match="not authorized"):
            engine.images.pull(image, insecure=True)  # an anonymous token grants nothing
        with pytest.raises(ImageError, match=r"login to .* failed \(HTTP 401\)"):
            engine.images.login(reg.host, "hub", "wrong", insecure=True)
        engine.images.login(reg.host, "hub", "hub-pw", insecure=True)
        try:
            tokens.requests.clear()
            assert image in engine.images.pull(image, insecure=True).tags
            assert {"service": tokens.service, "scope": "repository:private/tok:pull"} in (
                tokens.requests
            )
            assert run_out(engine, image, ["cat", "/etc/motd"]) == "v2\n"
        finally:
            engine.images.logout(reg.host)
            engine.images.remove(image)

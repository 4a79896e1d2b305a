"""Archives made by skopeo (docker-archive, oci-archive, an OCI directory) loaded and
run; ``save`` read back by skopeo and loaded again; ``commit``; many layers."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import LEVELS, output_of
from image_support import entry, make_oci_image, missing_tools, tar_layer, write_docker_archive

from codex32 import ContainerConfig, ContainerEngine, ImageError, IsolationType

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (setup.sh)"),
]


@pytest.fixture(scope="module")
def layout(engine: ContainerEngine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rootfs = Path(engine.images.build("busybox", quiet=True).path)
    path = tmp_path_factory.mktemp("archives") / "oci"
    make_oci_image(
        path,
        "1.0",
        rootfs,
        cmd=["cat", "/etc/motd"],
        env=["FROM=archive"],
        extra={"/etc/motd": "from an archive\n"},
    )
    return path


def run(
    engine: ContainerEngine,
    image: str,
    command: list[str] | None = None,
    level: IsolationType = IsolationType.STANDARD,
) -> str:
    return output_of(
        engine,
        ContainerConfig(
            image=image, command=command or [], isolation=level, auto_remove=True, network="none"
        ),
    )


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("level", LEVELS, ids=[level.value for level in LEVELS])
def test_docker_archive_loads_and_runs(
    engine: ContainerEngine, layout: Path, tmp_path: Path, level: IsolationType
) -> None:
    archive = tmp_path / "docker.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:1.0", f"docker-archive:{archive}:trader/bot:1.2")
    (image,) = engine.images.load(archive)
    assert image.tags == ["trader/bot:1.2"]
    assert run(engine, "trader/bot:1.2", level=level) == "from an archive\n"


def test_oci_archive_and_directory(engine: ContainerEngine, layout: Path, tmp_path: Path) -> None:
    archive = tmp_path / "oci-bundle.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:1.0", f"oci-archive:{archive}:2.0")
    (from_tar,) = engine.images.load(archive)
    assert "localhost/oci-bundle:2.0" in from_tar.tags  # a bare tag: named after the file
    (from_dir,) = engine.images.load(layout)
    assert from_dir.id == from_tar.id
    assert run(engine, "localhost/oci-bundle:2.0", ["sh", "-c", "echo $FROM"]) == "archive\n"


def test_save_round_trip(engine: ContainerEngine, layout: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:1.0", f"docker-archive:{source}:round/trip:1")
    (loaded,) = engine.images.load(source)
    out = tmp_path / "saved.tar"
    engine.images.save(["round/trip:1"], out)
    seen = json.loads(skopeo("inspect", f"docker-archive:{out}"))
    assert len(seen["Layers"]) == len(engine.images.inspect("round/trip:1")["RootFS"]["Layers"])
    assert seen["Env"] and "FROM=archive" in seen["Env"]
    config = json.loads(skopeo("inspect", "--config", f"docker-archive:{out}"))
    assert config["rootfs"]["diff_ids"] == engine.images.inspect("round/trip:1")["RootFS"]["Layers"]
    # as docker load reads it: manifest.json, each layer's file digest its diff id
    with tarfile.open(out) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["round/trip:1"]
        assert {"index.json", "oci-layout", "repositories"} <= set(tar.getnames())
    engine.images.remove("round/trip:1")
    (again,) = engine.images.load(out)
    assert again.id == loaded.id and "round/trip:1" in again.tags
    # and skopeo can copy it on (what podman load does with the same library)
    skopeo("copy", "--quiet", f"docker-archive:{out}", f"oci:{tmp_path / 'copied'}:x")
    engine.images.remove("round/trip:1")


def test_load_refuses_a_non_archive(engine: ContainerEngine, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    with tarfile.open(junk, "w") as tar:
        tar.add(__file__, arcname="readme")
    with pytest.raises(ImageError, match="neither a docker save archive"):
        engine.images.load(junk)
    with pytest.raises(ImageError, match="no archive at"):
        engine.images.load(tmp_path / "missing.tar")


# STRICT's root is read-only: its containers leave nothing in their upper directory.
WRITABLE = (IsolationType.MINIMAL, IsolationType.STANDARD)


@pytest.mark.parametrize("level", WRITABLE, ids=[level.value for level in WRITABLE])
def test_commit_makes_a_layer(
    engine: ContainerEngine, layout: Path, tmp_path: Path, level: IsolationType
) -> None:
    archive = tmp_path / "base.tar"
    skopeo("copy", "--quiet", f"oci:{layout}:1.0", f"docker-archive:{archive}:commit/base:1")
    engine.images.load(archive)
    config = ContainerConfig(
        image="commit/base:1",
        isolation=level,
        network="none",
        command=["sh", "-c", "echo committed > /data.txt; rm /etc/motd"],
    )
    container = engine.containers.create(config)
    try:
        container.start()
        assert container.wait(30) == 0
        tag = f"commit/new:{level.value}"
        image = engine.images.commit(container.name, tag)
    finally:
        container.remove(force=True)
    layers = engine.images.inspect(tag)["RootFS"]["Layers"]
    assert len(layers) == len(engine.images.inspect("commit/base:1")["RootFS"]["Layers"]) + 1
    assert image.tags == [tag]
    out = run(
        engine,
        tag,
        ["sh", "-c", "cat /data.txt; stat -c %u /data.txt; ls /etc/motd || true"],
        level=level,
    )
    assert out.startswith("committed\n0\n"), out  # owner shifted back to the image's 0
    assert "motd" not in out.split("\n")[2]  # the whiteout hides it
    engine.images.remove(tag)


def test_commit_of_a_template_container(engine: ContainerEngine) -> None:
    container = engine.containers.create(
        ContainerConfig(image="busybox", command=["sh", "-c", "echo hi > /hello"], network="none")
    )
    try:
        container.start()
        assert container.wait(30) == 0
        engine.images.commit(container.name, "from/template:1")
    finally:
        container.remove(force=True)
    assert run(engine, "from/template:1", ["cat", "/hello"]) == "hi\n"
    engine.images.remove("from/template:1")


def test_many_layers_fit_one_overlay(engine: ContainerEngine, tmp_path: Path) -> None:
    """100 layers: absolute paths would pass the kernel's one-page limit on mount options."""
    rootfs = Path(engine.images.build("busybox", quiet=True).path)
    base = tmp_path / "base.tar"
    with tarfile.open(base, "w") as tar:
        tar.add(rootfs, arcname=".")
    layers = [base.read_bytes()]
    layers += [tar_layer([entry(f"layer{i}", data=f"{i}\n".encode())]) for i in range(99)]
    archive = tmp_path / "many.tar"
    write_docker_archive(archive, layers, tag="many/layers:100")
    engine.images.load(archive)
    plan = engine.plan(ContainerConfig(image="many/layers:100", command=["true"]))
    overlay = next(s for s in plan.steps if s["op"] == "overlay")
    absolute = ":".join(f"{overlay['lower_base']}/{p}" for p in overlay["lower"])
    assert len(absolute) > 4096
    for level in LEVELS:
        assert (
            run(engine, "many/layers:100", ["sh", "-c", "cat /layer0 /layer98"], level=level)
            == "0\n98\n"
        )
    engine.images.remove("many/layers:100")


def test_exposed_ports_stop_signal_and_healthcheck(engine: ContainerEngine, tmp_path: Path) -> None:
    rootfs = Path(engine.images.build("busybox", quiet=True).path)
    base = tmp_path / "base.tar"
    with tarfile.open(base, "w") as tar:
        tar.add(rootfs, arcname=".")
    health = {"Test": ["CMD", "true"], "Interval": 1000000000}
    archive = tmp_path / "ports.tar"
    write_docker_archive(
        archive,
        [base.read_bytes()],
        tag="ports/img:1",
        extra_config={
            "ExposedPorts": {"8080/tcp": {}, "5353/udp": {}},
            "StopSignal": "SIGINT",
            "Labels": {"team": "bots"},
            "Healthcheck": health,
        },
    )
    engine.images.load(archive)
    given = ContainerConfig(
        image="ports/img:1", publish_all=True, stop_signal="SIGUSR1", ports=["18080:8080"]
    )
    plain = ContainerConfig(image="ports/img:1")
    made = [engine.containers.create(c) for c in (given, plain)]
    try:
        with_ports, without = (c.config for c in made)
        published = {(p.container_port, p.protocol): p.host_port for p in with_ports.ports}
        assert published[(8080, "tcp")] == 18080  # -p wins over -P for that port
        assert published[(5353, "udp")] > 0
        assert with_ports.stop_signal == "SIGUSR1" and without.stop_signal == "SIGINT"
        assert without.ports == []
        meta = json.loads((engine._store.directory(made[1].id) / "image.json").read_text())
        assert meta["healthcheck"] == health and meta["labels"] == {"team": "bots"}
    finally:
        for container in made:
            container.remove(force=True)
    engine.images.remove("ports/img:1")


def test_whiteouts_and_opaque_dirs_in_a_running_container(
    engine: ContainerEngine, tmp_path: Path
) -> None:
    """OCI's deletions, applied by the kernel's overlay at every level (STRICT reads the
    user.overlay.opaque copy through userxattr)."""
    rootfs = Path(engine.images.build("busybox", quiet=True).path)
    base = tmp_path / "base.tar"
    with tarfile.open(base, "w") as tar:
        tar.add(rootfs, arcname=".")
    first = tar_layer(
        [
            entry("data", tarfile.DIRTYPE, mode=0o755),
            entry("data/old", data=b"old\n"),
            entry("gone", data=b"gone\n"),
        ]
    )
    second = tar_layer(
        [
            entry("data", tarfile.DIRTYPE, mode=0o755),
            entry("data/.wh..wh..opq"),
            entry("data/new", data=b"new\n"),
            entry(".wh.gone"),
        ]
    )
    archive = tmp_path / "deletions.tar"
    write_docker_archive(archive, [base.read_bytes(), first, second], tag="oci/deletions:1")
    engine.images.load(archive)
    for level in LEVELS:
        out = run(
            engine, "oci/deletions:1", ["sh", "-c", "ls /data; ls /gone 2>&1 || true"], level=level
        )
        assert out.splitlines()[0] == "new", (level, out)
        assert "No such file" in out.splitlines()[1], (level, out)
    engine.images.remove("oci/deletions:1")

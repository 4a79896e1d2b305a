"""The image verbs through the real ``codex32`` program: pull from a real registry with
progress, images, image inspect, run, save, rmi, load, login; errors are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_support import Registry, make_oci_image, missing_tools, run_registry, skopeo_copy

from codex32 import ContainerEngine

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {missing_tools()} (setup.sh)"),
]

CODEX32 = str(Path(sys.executable).with_name("codex32"))


def codex32(
    storage: Path, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEX32_", "CONTAINER_"))}
    env["CODEX32_STORAGE_DIR"] = str(storage)
    env["CODEX32_CGROUP_PARENT"] = os.environ["CODEX32_CGROUP_PARENT"]
    return subprocess.run([CODEX32, *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 125, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codex32: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def registry(
    engine: ContainerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    rootfs = Path(engine.images.build("busybox", quiet=True).path)
    layout = tmp_path_factory.mktemp("cli-layout") / "oci"
    make_oci_image(layout, "1", rootfs, cmd=["echo", "image-cmd"], entrypoint=[],
                   extra={"/etc/motd": "cli\n"})  # fmt: skip
    with run_registry(tmp_path_factory.mktemp("cli-registry"), user="cli") as reg:
        skopeo_copy(f"oci:{layout}:1", f"docker://{reg.host}/cli/bb:1", *reg.creds_args())
        yield reg


def test_image_verbs(storage_dir: Path, registry: Registry, tmp_path: Path) -> None:
    image = f"{registry.host}/cli/bb:1"
    assert "asks for a login" in one_line_error(
        codex32(storage_dir, "pull", "--insecure-registry", image)
    )
    login = codex32(storage_dir, "login", "--insecure-registry", "-u", "cli", "--password-stdin",
                    registry.host, stdin="cli-pw\n")  # fmt: skip
    assert login.returncode == 0 and "Login Succeeded" in login.stdout, login.stderr
    pulled = codex32(storage_dir, "pull", "--insecure-registry", image)
    assert pulled.returncode == 0, pulled.stderr
    image_id = pulled.stdout.strip()
    assert image_id.startswith("sha256:")
    assert "Traceback" not in pulled.stderr
    listed = json.loads(codex32(storage_dir, "images", "--json").stdout)
    assert any(i["id"] == image_id and image in i["tags"] for i in listed)
    table = codex32(storage_dir, "images").stdout
    assert f"{registry.host}/cli/bb" in table and image_id[7:19] in table
    inspected = json.loads(codex32(storage_dir, "image", "inspect", image).stdout)
    assert inspected[0]["Id"] == image_id and inspected[0]["Config"]["Cmd"] == ["echo", "image-cmd"]
    ran = codex32(storage_dir, "run", "--rm", "--network", "none", image)
    assert (ran.returncode, ran.stdout) == (0, "image-cmd\n"), ran.stderr
    ran = codex32(storage_dir, "run", "--rm", "--network", "none", "--entrypoint", "cat", image,
                  "/etc/motd")  # fmt: skip
    assert (ran.returncode, ran.stdout) == (0, "cli\n"), ran.stderr
    archive = tmp_path / "saved.tar"
    assert codex32(storage_dir, "save", "-o", str(archive), image).returncode == 0
    removed = codex32(storage_dir, "rmi", image)
    assert removed.returncode == 0 and "Deleted" in removed.stdout, removed.stderr
    assert "no image named" in one_line_error(codex32(storage_dir, "image", "inspect", image))
    loaded = codex32(storage_dir, "load", "-i", str(archive))
    assert loaded.returncode == 0 and image in loaded.stdout, loaded.stderr
    assert codex32(storage_dir, "rmi", image).returncode == 0
    pruned = codex32(storage_dir, "image", "prune")
    assert pruned.returncode == 0, pruned.stderr
    assert codex32(storage_dir, "logout", registry.host).returncode == 0


def test_image_errors_are_one_line(storage_dir: Path, tmp_path: Path) -> None:
    assert "invalid tag" in one_line_error(codex32(storage_dir, "pull", "bad:ta g"))
    assert "no image named" in one_line_error(codex32(storage_dir, "rmi", "nothing/here:1"))
    assert "no archive at" in one_line_error(
        codex32(storage_dir, "load", "-i", str(tmp_path / "none.tar"))
    )
    assert "cannot reach registry" in one_line_error(
        codex32(storage_dir, "pull", "--insecure-registry", "127.0.0.1:9/x/y:1")
    )

"""``codex32 build debian``: a Debian rootfs from Debian's packages (mmdebstrap), run at
every level. Slow (about half a minute of downloads and unpacking): ``-m slow``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LEVELS, output_of

from codex32 import ContainerConfig, ContainerEngine, IsolationType

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("mmdebstrap") is None and shutil.which("debootstrap") is None,
        reason="needs mmdebstrap or debootstrap (setup.sh)",
    ),
]


#: The network namespace the tests were collected in: the host's, with the Debian
#: mirror in reach (the session then moves to a namespace of its own, with only lo).
_COLLECTED_NET = os.open("/proc/thread-self/ns/net", os.O_RDONLY)


@pytest.fixture(scope="module")
def debian(engine: ContainerEngine) -> str:
    """Built by the real CLI, run in the host's network namespace to reach the mirror."""
    env = dict(os.environ, CODEX32_STORAGE_DIR=str(engine.settings.storage_dir))
    codex32 = str(Path(sys.executable).with_name("codex32"))
    build = subprocess.run(
        ["nsenter", f"--net=/proc/self/fd/{_COLLECTED_NET}", codex32, "build", "debian"],
        pass_fds=(_COLLECTED_NET,),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert "[1/2] bootstrapping" in build.stderr and "I: success" in build.stderr, build.stderr
    image = engine.images.get("debian")
    assert image.built
    return image.name


@pytest.mark.parametrize("level", LEVELS, ids=[level.value for level in LEVELS])
def test_debian_template_runs(engine: ContainerEngine, debian: str, level: IsolationType) -> None:
    config = ContainerConfig(
        image=debian,
        command=["bash", "-c", "cat /etc/debian_version; dpkg -s base-files | grep Status; id -u"],
        isolation=level,
        auto_remove=True,
        network="none",
    )
    version, status, uid = output_of(engine, config).splitlines()
    assert version.startswith("12."), version
    assert status == "Status: install ok installed"
    assert uid == "0"


def test_debian_commit_is_an_image(engine: ContainerEngine, debian: str) -> None:
    """The template's tree becomes an image's base layer through commit."""
    container = engine.containers.create(
        ContainerConfig(image=debian, command=["touch", "/marker"], network="none")
    )
    try:
        container.start()
        assert container.wait(60) == 0
        engine.images.commit(container.name, "local/debian:committed")
    finally:
        container.remove(force=True)
    out = output_of(
        engine,
        ContainerConfig(
            image="local/debian:committed",
            auto_remove=True,
            network="none",
            command=["ls", "/marker"],
        ),
    )
    assert out == "/marker\n"
    engine.images.remove("local/debian:committed")

"""Installed from a wheel, away from the checkout, the engine works: the recipes ship.

The wheel is built from a copy of the checkout's tracked files (nothing is written to
the work tree) and installed into a fresh virtualenv. Its dependencies are not fetched
again: a ``.pth`` file lends the checkout venv's site-packages (setup.sh installed
them there), after the new venv's own, so ``codex32`` itself is the wheel's. Then, with
the working directory outside the checkout, ``codex32 images`` must list the shipped
templates and ``codex32 run --rm busybox -- echo hi`` must print ``hi``.

Leaks: the storage directory carries the session tag (the mount check sees it), the
cgroup parent is the session's (inherited), and processes are looked for by the new
venv's directory, which the session's own leak check (by this venv's) would not see.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SESSION_TAG

pytestmark = pytest.mark.root

CHECKOUT = Path(__file__).resolve().parents[2]


def _tracked_copy(destination: Path) -> None:
    """The checkout's tracked files (as a fresh clone has them) under *destination*."""
    listed = subprocess.run(
        ["git", "-C", str(CHECKOUT), "ls-files", "-z"],
        capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = CHECKOUT / name
        if not source.is_file():  # deleted in the work tree, not yet committed
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _processes_of(directory: Path) -> list[str]:
    out = subprocess.run(
        ["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    return [
        line.strip()
        for line in out.splitlines()
        if str(directory) in line and not line.split()[1].startswith("Z")
    ]


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[Path, Path]]:
    """(venv, storage dir): the wheel installed into a fresh venv; all removed after."""
    scratch = Path(tempfile.mkdtemp(prefix=f"{SESSION_TAG}-wheel-"))
    os.chmod(scratch, 0o711)  # a STRICT container's mapped root must reach its layers
    try:
        source, dist, venv = scratch / "src", scratch / "dist", scratch / "venv"
        _tracked_copy(source)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        [wheel] = dist.glob("codex32-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        assert "codex32/rootfs-templates/busybox/template.toml" in names, names
        subprocess.run(
            [sys._base_executable, "-m", "venv", "--without-pip", str(venv)],  # type: ignore[attr-defined]
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        query = "import sysconfig; print(sysconfig.get_path('purelib'))"
        purelib = subprocess.run(
            [str(venv / "bin" / "python"), "-c", query],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        Path(purelib, "zz-codex32-test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
        storage = scratch / "storage"
        yield venv, storage
        if storage.exists():  # the templates built in the run, and nothing else
            leftover = [p.name for p in (storage / "containers").iterdir()] if (
                storage / "containers"
            ).is_dir() else []  # fmt: skip
            assert leftover == [], f"containers left in {storage}: {leftover}"
    finally:
        deadline = time.monotonic() + 5
        while _processes_of(scratch) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _processes_of(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        assert left == [], f"processes of the wheel's venv left: {left}"


def _codex32(venv: Path, storage: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("CODEX32_TEMPLATES_DIR", None)  # the recipes must come from the package
    env.pop("VIRTUAL_ENV", None)
    env["CODEX32_STORAGE_DIR"] = str(storage)
    return subprocess.run(
        [str(venv / "bin" / "codex32"), *args],
        cwd="/",  # outside the checkout
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_the_installed_package_finds_its_templates_and_runs_a_container(
    installed: tuple[Path, Path],
) -> None:
    venv, storage = installed
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import codex32; print(codex32.__file__)"],
        cwd="/", capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    assert where.startswith(str(venv)), f"codex32 imported from {where}, not the wheel"
    images = _codex32(venv, storage, "images")
    assert images.returncode == 0, images.stderr
    listed = {line.split()[0] for line in images.stdout.splitlines()[1:] if line.strip()}
    assert {"busybox", "python"} <= listed, images.stdout
    run = _codex32(venv, storage, "run", "--rm", "--network", "none", "busybox", "--", "echo", "hi")
    assert (run.returncode, run.stdout) == (0, "hi\n"), run.stderr
    print(f"wheel: codex32 from {where}; images: {sorted(listed)}; run: {run.stdout!r}")

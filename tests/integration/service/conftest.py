"""Fixtures of the service tests: one service for the module, its policy, its scratch dirs."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex32 import ContainerEngine
from service.service_support import Service

SESSION_TAG = os.environ["CODEX32_TEST_SESSION"]

#: What the tests' policy allows: binds below ``allowed/``, NET_ADMIN added, at most
#: 1 GiB and 2000 processes (given to every container that asks for none).
POLICY = """
volume_roots = ["{allowed}"]
min_isolation = "standard"
allowed_capabilities = ["NET_ADMIN"]
allow_host_network = false
allow_privileged = false

[limits]
memory_bytes = "1g"
pids = 2000
"""


@pytest.fixture(scope="session")
def scratch() -> Iterator[Path]:
    """A directory for sockets, the policy and bind sources (0711: STRICT roots pass)."""
    path = Path(tempfile.mkdtemp(prefix=f"{SESSION_TAG}-svc-"))
    os.chmod(path, 0o711)
    (path / "allowed").mkdir(mode=0o755)
    (path / "secret").mkdir(mode=0o755)
    (path / "secret" / "key").write_text("not for callers\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def policy_file(scratch: Path) -> Path:
    path = scratch / "policy.toml"
    path.write_text(POLICY.format(allowed=scratch / "allowed"))
    return path


@pytest.fixture(scope="session")
def templates(engine: ContainerEngine) -> None:
    """busybox built before the service starts (no build in the middle of a test)."""
    if not engine.images.get("busybox").built:
        engine.images.build("busybox", quiet=True)


@pytest.fixture(scope="session")
def service(
    storage_dir: Path, scratch: Path, policy_file: Path, templates: None
) -> Iterator[Service]:
    """The service every test of the session shares (unix socket only)."""
    workdir = scratch / "main"
    workdir.mkdir()
    running = Service(storage_dir, workdir, policy=policy_file).start()
    yield running
    code = running.stop()
    assert code in (0, -signal.SIGTERM), running.log()  # uvicorn re-raises the signal
    assert "Traceback" not in running.log(), running.log()
    assert not running.socket.exists()  # a clean stop takes its socket file along

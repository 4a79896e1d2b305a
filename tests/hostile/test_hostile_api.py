"""Hostile values through the Python API: refused with the library's own errors
(pydantic's ValidationError or a Codex32Error, both one message per problem), never
another exception type, and nothing created. NUL bytes go here: argv cannot carry them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import assert_nothing_new, snapshot
from pydantic import ValidationError

from codex32 import (
    Codex32Error,
    ContainerConfig,
    ContainerEngine,
    ContainerNotFoundError,
    ResourceLimits,
    TmpfsMount,
    Ulimit,
    Volume,
)

pytestmark = pytest.mark.root

NUL = "a\0b"
LONG = "x" * 100_000
BAD: dict[str, dict[str, Any]] = {
    "name-nul": {"name": NUL},
    "name-traversal": {"name": "../../etc"},
    "name-long": {"name": LONG},
    "env-key-nul": {"env": {NUL: "1"}},
    "env-value-nul": {"env": {"A": NUL}},
    "env-key-equals": {"env": {"A=B": "1"}},
    "env-key-empty": {"env": {"": "1"}},
    "command-nul": {"command": ["echo", NUL]},
    "hostname-nul": {"hostname": NUL},
    "hostname-long": {"hostname": LONG},
    "workdir-nul": {"working_dir": "/w\0x"},
    "workdir-relative": {"working_dir": "w"},
    "user-nul": {"user": "root\0"},
    "image-nul": {"image": NUL},
    "image-traversal": {"image": "../../etc"},
    "image-empty": {"image": ""},
    "volume-source-nul": {"volumes": [{"source": "/tmp\0x", "target": "/x"}]},
    "volume-target-nul": {"volumes": [{"source": "/tmp", "target": "/x\0y"}]},
    "volume-source-relative": {"volumes": [{"source": "tmp", "target": "/x"}]},
    "volume-target-relative": {"volumes": [{"source": "/tmp", "target": "x"}]},
    "volume-source-missing": {"volumes": [{"source": "/nonexistent-c32", "target": "/x"}]},
    "tmpfs-target-nul": {"tmpfs": [{"target": "/t\0"}]},
    "tmpfs-size-negative": {"tmpfs": [{"target": "/t", "size_bytes": -1}]},
    "tmpfs-mode-huge": {"tmpfs": [{"target": "/t", "mode": 0o77777}]},
    "tmpfs-flag-unknown": {"tmpfs": [{"target": "/t", "flags": ["exec;rm"]}]},
    "ulimit-unknown": {"ulimits": [{"name": "bogus", "soft": 1, "hard": 1}]},
    "ulimit-soft-over-hard": {"ulimits": [{"name": "nofile", "soft": 10, "hard": 5}]},
    "ulimit-overflow": {"ulimits": [{"name": "nofile", "soft": 2**70, "hard": 2**70}]},
    "memory-negative": {"resources": {"memory_bytes": -5}},
    "memory-overflow": {"resources": {"memory_bytes": 2**70}},
    "pids-below-unlimited": {"resources": {"pids_limit": -2}},  # (0 and -1: unlimited)
    "cpus-negative": {"resources": {"cpus": -1.0}},
    "cpus-nan": {"resources": {"cpus": float("nan")}},
    "device-nul": {"resources": {"device_read_bps": ["/dev/sd\0a:1mb"]}},
    "device-relative": {"resources": {"device_read_bps": ["sda:1mb"]}},
    "stop-signal-bogus": {"stop_signal": "SIGBOGUS"},
    "stop-timeout-negative": {"stop_timeout": -1},
    "log-size-tiny": {"log_max_size": 1},
    "log-files-zero": {"log_max_files": 0},
    "isolation-bogus": {"isolation": "bogus"},
    "network-traversal": {"network": "../x"},
    "restart-bogus": {"restart_policy": {"name": "sometimes"}},
    "cap-bogus": {"cap_add": ["CAP_BOGUS"]},
    "ports-overflow": {"ports": [{"host_port": 70000, "container_port": 80}]},
    "extra-field": {"privileged": True},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_hostile_config_is_refused(case: str, engine: ContainerEngine, storage_dir: Path) -> None:
    before = snapshot(storage_dir)
    fields = {"image": "busybox", "command": ["true"], "network": "none", **BAD[case]}
    with pytest.raises((ValidationError, Codex32Error)):
        config = ContainerConfig(**fields)
        engine.containers.create(config)
    assert_nothing_new(before, storage_dir)


@pytest.mark.parametrize("ref", ["../../etc", NUL, LONG, "*", "", "/", "-1"])
def test_hostile_references_find_nothing(ref: str, engine: ContainerEngine) -> None:
    with pytest.raises(ContainerNotFoundError):
        engine.containers.get(ref)


def test_models_used_above_are_the_public_ones() -> None:
    """(The dict cases above build these models; their names are the public API's.)"""
    assert {Volume, TmpfsMount, Ulimit, ResourceLimits}

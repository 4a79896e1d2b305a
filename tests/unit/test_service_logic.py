"""Service logic without a server: error statuses, policy files and rules, tokens."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codex32 import (
    ConfigError,
    ContainerConfig,
    ContainerError,
    ContainerNotFoundError,
    ImageError,
    ImageNotFoundError,
    LaunchError,
    NetworkError,
    StateError,
)
from codex32.errors import CgroupError
from codex32.service.auth import _what, fingerprint, init_token, load_token
from codex32.service.errors import from_exception, status_of
from codex32.service.policy import Policy, PolicyDenied


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ContainerNotFoundError("no such container: x"), 404),
        (StateError("cannot pause an exited container"), 409),
        (ConfigError("the container name 'a' is already in use"), 409),
        (ConfigError("bad thing"), 400),
        (CgroupError("this host cannot enforce memory_bytes"), 422),
        (LaunchError("sh: not found", exit_code=127), 400),
        (LaunchError("set-up failed"), 500),
        (ImageNotFoundError("no rootfs template named 'x'"), 404),
        (ImageError("building template 'x' failed (exit 1)"), 500),
        (NetworkError("network x does not exist"), 404),
        (NetworkError("network x is in use by 1 container(s): a"), 409),
        (NetworkError("invalid subnet 'x' for network n: bad"), 400),
        (NetworkError("cannot write the IPAM store"), 500),
        (ContainerError("export failed: disk full"), 500),
        (PolicyDenied("min_isolation", "too low"), 403),
    ],
)
def test_status_of_engine_errors(error: ContainerError, status: int) -> None:
    assert status_of(error) == status


def test_answers_keep_the_hint_apart_and_hide_tracebacks() -> None:
    answer = from_exception(StateError("cannot remove", container="web", hint="stop it first"))
    assert answer.message == "[container web] cannot remove"
    assert answer.hint == "stop it first" and answer.kind == "StateError"
    crash = from_exception(KeyError("boom"))
    assert crash.status == 500 and crash.kind == "InternalError"
    assert "Traceback" not in crash.message
    assert from_exception(TimeoutError("late")).status == 408


def test_policy_file_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        Policy.load(missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("min_isolation = 'none'\n")
    with pytest.raises(ConfigError, match="min_isolation"):
        Policy.load(bad)
    bad.write_text("unknown_rule = true\n")
    with pytest.raises(ConfigError, match="unknown_rule"):
        Policy.load(bad)
    bad.write_text("allowed_capabilities = ['CAP_NOPE']\n")
    with pytest.raises(ConfigError, match="CAP_NOPE"):
        Policy.load(bad)
    bad.write_text("[limits]\nmemory_bytes = '512m'\n")
    assert Policy.load(bad).limits.memory_bytes == 512 << 20


def test_policy_defaults_refuse_host_paths_and_minimal(tmp_path: Path) -> None:
    policy = Policy()
    with pytest.raises(PolicyDenied) as denied:
        policy.check(
            ContainerConfig(image="busybox", volumes=[{"source": str(tmp_path), "target": "/x"}])
        )
    assert denied.value.rule == "volume_roots"
    with pytest.raises(PolicyDenied) as minimal:
        policy.check(ContainerConfig(image="busybox", isolation="minimal", network="none"))
    assert minimal.value.rule == "min_isolation"
    ok = ContainerConfig(image="busybox", isolation="strict")
    assert policy.check(ok) == ok  # nothing to fill in without maximums


def test_policy_roots_are_resolved_and_prefixes_are_not_roots(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data-other").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    policy = Policy(volume_roots=(str(tmp_path / "link"),))
    assert policy.volume_roots == (str(tmp_path / "data"),)
    inside = ContainerConfig(
        image="b", volumes=[{"source": str(tmp_path / "data"), "target": "/d"}]
    )
    policy.check(inside)
    sibling = ContainerConfig(
        image="b", volumes=[{"source": str(tmp_path / "data-other"), "target": "/d"}]
    )
    with pytest.raises(PolicyDenied):
        policy.check(sibling)


def test_policy_fills_unset_limits_with_the_maximums() -> None:
    policy = Policy.model_validate({"limits": {"memory_bytes": "1g", "cpus": 2, "pids": 100}})
    admitted = policy.check(ContainerConfig(image="b", resources={"cpus": 0.5}))
    assert admitted.resources.memory_bytes == 1 << 30
    assert admitted.resources.cpus == 0.5
    assert admitted.resources.pids_limit == 100
    with pytest.raises(PolicyDenied) as above:
        policy.check(ContainerConfig(image="b", resources={"cpus": 3}))
    assert above.value.rule == "limits.cpus"


def test_token_file_is_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "service.token"
    assert load_token(path) is None
    token = init_token(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_token(path) == token and len(token) >= 40
    assert init_token(path) != token  # a new one each time
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_token(path)
    assert fingerprint("abc") != fingerprint("abd") and "abc" not in fingerprint("abc")


def test_audit_action_names() -> None:
    assert _what("POST", "/api/v1/containers") == ("container.create", None)
    assert _what("POST", "/api/v1/containers/web/stop") == ("container.stop", "web")
    assert _what("DELETE", "/api/v1/containers/web") == ("container.remove", "web")
    assert _what("POST", "/api/v1/networks") == ("network.create", None)


def test_the_service_pool_size_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --sandbox-pool`` and ``CODEX32_SANDBOX_POOL``: 2 by default, a bad value a
    one-line error before anything is started (the flag wins over the variable)."""
    from codex32 import ConfigError
    from codex32.service.settings import ServiceSettings

    monkeypatch.delenv("CODEX32_SANDBOX_POOL", raising=False)
    assert ServiceSettings.from_env().sandbox_pool == 2
    assert ServiceSettings.from_env(sandbox_pool=0).sandbox_pool == 0
    for bad in (-1, 65):
        with pytest.raises(ConfigError, match=f"--sandbox-pool={bad}: a sandbox pool size"):
            ServiceSettings.from_env(sandbox_pool=bad)
    monkeypatch.setenv("CODEX32_SANDBOX_POOL", "5")
    assert ServiceSettings.from_env().sandbox_pool == 5
    assert ServiceSettings.from_env(sandbox_pool=1).sandbox_pool == 1
    monkeypatch.setenv("CODEX32_SANDBOX_POOL", "lots")
    with pytest.raises(ConfigError, match="CODEX32_SANDBOX_POOL='lots' is not a whole number"):
        ServiceSettings.from_env()

"""The executor's pure logic: models, restart decisions and back-off, health states."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from codex32 import RestartPolicy
from codex32.executor import (
    Bot,
    BotRun,
    DeploymentConfig,
    DeploymentType,
    HealthCheck,
    HealthState,
    RunState,
)
from codex32.executor.backends import ProbeResult
from codex32.executor.backoff import restart_delay, restarts_in_a_row, should_restart
from codex32.executor.health import HealthTracker

SAMPLE = str(Path(__file__).resolve().parents[2] / "bots" / "sample_bot.py")


def _run(
    number: int,
    ran: float,
    *,
    code: int = 1,
    trigger: str = "policy",
    state: RunState = RunState.EXITED,
) -> BotRun:
    start = 1000.0 + number * 100
    return BotRun(
        bot_id="a" * 16,
        number=number,
        deployment_type=DeploymentType.LOCAL_PROCESS,
        state=state,
        exit_code=code,
        started_at=start,
        finished_at=start + ran,
        trigger=trigger,
    )


def test_moving_a_bot_to_a_container_is_one_field() -> None:
    bot = Bot(name="sample", code=SAMPLE)
    assert bot.deployment_config.deployment_type is DeploymentType.LOCAL_PROCESS
    bot.deployment_config.deployment_type = DeploymentType.CUSTOM_CONTAINER
    assert bot.deployment_config.deployment_type is DeploymentType.CUSTOM_CONTAINER
    with pytest.raises(ValidationError):
        bot.deployment_config.deployment_type = "docker_container"  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("process", DeploymentType.LOCAL_PROCESS),
        ("container", DeploymentType.CUSTOM_CONTAINER),
        ("CUSTOM_CONTAINER", DeploymentType.CUSTOM_CONTAINER),
        ("pod", DeploymentType.KUBERNETES_POD),
    ],
)
def test_deployment_type_names(text: str, kind: DeploymentType) -> None:
    assert DeploymentType.parse(text) is kind


def test_bad_definitions_are_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="use process, container or pod"):
        DeploymentType.parse("docker")
    with pytest.raises(ValidationError, match="name"):
        Bot(name="Not A DNS Label", code=SAMPLE)
    with pytest.raises(ValidationError, match="env:VARIABLE or file:/path"):
        Bot(name="b", code=SAMPLE, secrets={"TOKEN": "plain-text-secret"})
    with pytest.raises(ValidationError, match="entry_point"):
        Bot(name="b", code=SAMPLE, entry_point="../outside.py")
    with pytest.raises(ValidationError, match="on-failure"):
        DeploymentConfig(restart_policy="always:3")


def test_a_script_and_a_directory_bot_name_the_file_they_run(tmp_path: Path) -> None:
    script = Bot(name="s", code=SAMPLE)
    assert (script.code_dir, script.script_name) == (Path(SAMPLE).parent, "sample_bot.py")
    (tmp_path / "main.py").write_text("print('hi')\n")
    directory = Bot(name="d", code=str(tmp_path))
    assert (directory.code_dir, directory.script_name) == (tmp_path, "main.py")
    directory.check_code()
    with pytest.raises(Exception, match="does not exist"):
        Bot(name="d", code=str(tmp_path), entry_point="bot.py").check_code()


def test_back_off_doubles_from_100ms_and_resets_after_10s_of_running() -> None:
    short = [_run(n, 0.5) for n in range(5, 0, -1)]  # newest first
    assert restart_delay(short[:1]) == pytest.approx(0.1)
    assert restart_delay(short[:2]) == pytest.approx(0.2)
    assert restart_delay(short) == pytest.approx(1.6)
    assert restart_delay([_run(9, 12.0), *short]) == pytest.approx(0.1)
    assert restart_delay([_run(n, 0.1) for n in range(20, 0, -1)]) == 60.0


def test_restart_policies_decide_from_the_history() -> None:
    failed, clean = _run(2, 1, code=1), _run(2, 1, code=0)
    first = _run(1, 1, trigger="user")
    assert not should_restart(RestartPolicy(name="no"), [failed, first])
    assert should_restart(RestartPolicy(name="always"), [clean, first])
    assert not should_restart(RestartPolicy.parse("on-failure"), [clean, first])
    assert should_restart(RestartPolicy.parse("on-failure"), [failed, first])
    history = [_run(n, 1) for n in range(4, 1, -1)] + [first]
    assert restarts_in_a_row(history) == 3
    assert not should_restart(RestartPolicy.parse("on-failure:3"), history)
    assert should_restart(RestartPolicy.parse("on-failure:4"), history)
    stopped = _run(3, 1, state=RunState.STOPPED)
    assert not should_restart(RestartPolicy(name="always"), [stopped])
    lost = _run(3, 1, state=RunState.LOST)
    assert should_restart(
        RestartPolicy.parse("on-failure"), [lost.model_copy(update={"exit_code": None})]
    )


def test_health_starting_healthy_unhealthy_as_docker() -> None:
    check = HealthCheck(probe={"type": "tcp", "port": 80}, interval=1, retries=2, start_period=5)
    now = time.monotonic()
    tracker = HealthTracker(check, started=now)
    bad, good = ProbeResult(False, "refused"), ProbeResult(True, "ok")
    assert tracker.record(bad, now + 1) is None  # in the start period: not counted
    assert tracker.record(bad, now + 2) is None
    assert tracker.state is HealthState.STARTING
    assert tracker.record(good, now + 3) is HealthState.HEALTHY
    assert tracker.record(bad, now + 6) is None  # one failure of two
    assert tracker.record(bad, now + 7) is HealthState.UNHEALTHY
    assert tracker.record(good, now + 8) is HealthState.HEALTHY
    late = HealthTracker(check, started=now)
    late.record(bad, now + 6)
    assert late.record(bad, now + 7) is HealthState.UNHEALTHY  # past the start period


def test_the_keepers_log_rotates_at_line_ends_even_for_one_big_read(tmp_path: Path) -> None:
    """A bot that prints fast hands the keeper more than a whole file in one read: it
    is cut at line ends, no file passes the size, only ``files`` files are kept."""
    from codex32.executor._shim import RotatingLog

    path = tmp_path / "bot.log"
    log = RotatingLog(str(path), max_bytes=100, files=4)
    lines = [b"line %02d %s\n" % (i, b"x" * 12) for i in range(40)]  # 21 bytes each
    log.write(b"".join(lines[:30]))  # one read of 630 bytes
    for line in lines[30:]:
        log.write(line)
    log.write(b"y" * 150)  # a line longer than a file is split, not kept whole
    files = [path, *(path.with_name(f"bot.log.{n}") for n in (1, 2, 3))]
    assert not path.with_name("bot.log.4").exists()
    assert files[0].read_bytes() == b"y" * 50 and files[1].read_bytes() == b"y" * 100
    assert all(0 < f.stat().st_size <= 100 for f in files)
    kept = b"".join(f.read_bytes() for f in reversed(files))
    whole = b"".join(lines) + b"y" * 150
    assert whole.endswith(kept) and kept.startswith(b"line")

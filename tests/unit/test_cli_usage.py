"""The ``codex32`` command line's parsing: usage errors (one line on stderr, exit
code 125), help, and the global ``--cgroup-parent``.

Nothing here makes a container, so these run the CLI in-process, without root; the
behaviour with real containers is in tests/integration/test_cli_behaviour.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from codex32.cli import _common
from codex32.cli import main as cli
from codex32.cli.entry import _verb
from codex32.settings import Settings


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``codex32 ARGS``, as the console script ends."""
    monkeypatch.setattr("sys.argv", ["codex32", *args])
    monkeypatch.setattr(_common.state, "debug", False)
    monkeypatch.setattr(_common.state, "cgroup_parent", None)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


@pytest.mark.parametrize(
    ("args", "problem", "command"),
    [
        (["run", "--bogus", "busybox"], "unknown flag: --bogus", "codex32 run"),
        (["run", "-Z", "busybox"], "unknown shorthand flag: 'Z' in -Z", "codex32 run"),
        (["--bogus", "ps"], "unknown flag: --bogus", "codex32"),
        (["stop", "-t", "abc", "x"], "invalid value for -t/--time", "codex32 stop"),
        (["stop"], '"codex32 stop" requires at least 1 argument', "codex32 stop"),
        (["logs"], '"codex32 logs" requires the CONTAINER argument', "codex32 logs"),
        (["logs", "a", "b"], "unexpected extra argument", "codex32 logs"),
        (["stop", "x", "-t"], "flag needs an argument: -t", "codex32 stop"),
        (["logs", "--tail"], "flag needs an argument: --tail", "codex32 logs"),
        (["bogus"], "no such command 'bogus'", "codex32"),
        (["--debug"], "missing command", "codex32"),
        (["network", "create", "x"], "required flag --subnet not set", "codex32 network create"),
        (["network", "create", "x", "--subnet"], "--subnet", "codex32 network create"),
        (["network", "ls", "--bogus"], "unknown flag: --bogus", "codex32 network ls"),
        (["export", "x"], "required flag -o/--output not set", "codex32 export"),
    ],
)
def test_a_usage_error_is_one_line_and_125(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    problem: str,
    command: str,
) -> None:
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert (code, out) == (125, ""), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("codex32: ") and problem in err, err
    assert err.rstrip().endswith(f"See '{command} --help'."), err
    assert "Usage:" not in err and "Traceback" not in err


@pytest.mark.parametrize("args", [["--help"], ["stop", "--help"], ["network", "create", "--help"]])
def test_help_still_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert (code, err) == (0, "")
    assert "Usage: codex32" in out


@pytest.mark.parametrize("args", [[], ["network"]])
def test_a_bare_group_prints_its_help_and_succeeds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """As ``docker`` and ``docker network``: help on stdout, exit 0 (not a usage error)."""
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert (code, err) == (0, "")
    assert "Usage: codex32" in out


def test_the_version_exits_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["--version"], monkeypatch, capsys)
    assert code == 0 and out.startswith("codex32 ")


def test_start_refuses_to_attach_to_several(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before any engine is made: nothing is started."""
    code, out, err = run_cli(["start", "-a", "one", "two"], monkeypatch, capsys)
    assert (code, out) == (125, "")
    assert err == (
        "codex32: you cannot start and attach multiple containers at once. "
        "See 'codex32 start --help'.\n"
    )


# -- --cgroup-parent ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "verb"),
    [
        (["--cgroup-parent", "bots", "run", "busybox"], "run"),
        (["--cgroup-parent", "/codex32.slice", "--debug", "start", "bot"], "start"),
        (["--cgroup-parent=bots", "restart", "bot"], "restart"),
        (["--debug", "--cgroup-parent", "run"], None),  # "run" is the option's value
    ],
)
def test_the_verb_is_not_the_cgroup_parents_value(args: list[str], verb: str | None) -> None:
    """The console script prestarts a fork server for starting verbs only."""
    assert _verb(args) == verb


@pytest.mark.parametrize(
    ("option", "variable", "parent"),
    [
        ("from-option", "from-env", "from-option"),
        (None, "from-env", "from-env"),
        ("", "from-env", "from-env"),
        (None, None, "codex32"),
        ("/abs/parent", None, "/abs/parent"),
    ],
)
def test_the_cgroup_parent_option_is_the_variable(
    monkeypatch: pytest.MonkeyPatch, option: str | None, variable: str | None, parent: str
) -> None:
    """--cgroup-parent sets what CODEX32_CGROUP_PARENT sets, and wins over it."""
    if variable is None:
        monkeypatch.delenv("CODEX32_CGROUP_PARENT", raising=False)
    else:
        monkeypatch.setenv("CODEX32_CGROUP_PARENT", variable)
    settings = Settings.from_env("/tmp/unused", cgroup_parent=option)
    assert settings.cgroup_parent == parent
    # What a monitor's restart is started with carries it on.
    assert settings.to_env()["CODEX32_CGROUP_PARENT"] == parent


def test_the_global_option_reaches_the_engine(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``codex32 --cgroup-parent P ps``: the engine the command makes uses P.

    (Making an engine and listing an empty storage directory touch nothing.)
    """
    monkeypatch.setenv("CODEX32_STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("CODEX32_CGROUP_PARENT", "from-env")
    monkeypatch.setattr(_common.state, "cgroup_parent", None)
    code, out, err = run_cli(["--cgroup-parent", "from-option", "ps"], monkeypatch, capsys)
    assert (code, err) == (0, ""), err
    assert out.startswith("CONTAINER ID")
    assert _common.engine().settings.cgroup_parent == "from-option"
    code, _, err = run_cli(["ps"], monkeypatch, capsys)
    assert (code, err) == (0, "")
    assert _common.engine().settings.cgroup_parent == "from-env"

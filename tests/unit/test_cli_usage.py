"""Usage errors of the ``codex32`` command line: one line on stderr and exit code 125.

Parsing fails before any engine is made, so these run the CLI in-process, without
root; the behaviour with real containers is in tests/integration/test_cli_behaviour.py.
"""

from __future__ import annotations

import pytest

from codex32.cli import _common
from codex32.cli import main as cli


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``codex32 ARGS``, as the console script ends."""
    monkeypatch.setattr("sys.argv", ["codex32", *args])
    monkeypatch.setitem(_common.state, "debug", False)
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

"""Every verb's ``--help`` prints its usage (help texts are rich markup: a ``[/X]`` in one
used to make it an internal error)."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from test_cli_usage import run_cli

from codex32.cli import main as cli


def _verbs(command: Any, path: tuple[str, ...] = ()) -> list[list[str]]:
    """Paths of every command and group (typer carries its own click: duck-typed)."""
    if hasattr(command, "commands"):
        found = [list(path)] if path else []
        for name, sub in command.commands.items():
            found += _verbs(sub, (*path, name))
        return found
    return [list(path)]


VERBS = _verbs(typer.main.get_command(cli.app))


def test_the_walk_finds_the_bot_and_db_verbs() -> None:
    assert ["bot", "deploy"] in VERBS and ["db", "init"] in VERBS and ["run"] in VERBS


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help(
    verb: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli([*verb, "--help"], monkeypatch, capsys)
    assert (code, err) == (0, ""), err
    assert "Usage: codex32" in out

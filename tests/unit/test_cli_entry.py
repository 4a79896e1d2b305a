"""The console script's first look at its arguments (before typer is imported)."""

from __future__ import annotations

import pytest

from codex32.cli.entry import _verb


@pytest.mark.parametrize(
    ("args", "verb"),
    [
        (["run", "--rm", "busybox", "true"], "run"),
        (["--debug", "start", "bot"], "start"),
        (["ps", "-a"], "ps"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_verb_is_the_first_non_option(args: list[str], verb: str | None) -> None:
    assert _verb(args) == verb


def _verbs() -> list[str]:
    from codex32.cli import main

    return [name for name, _function, _options in main._COMMANDS] + ["network"]


@pytest.mark.parametrize("verb", _verbs())
def test_a_verb_alone_parses_and_helps_as_the_whole_app(verb: str) -> None:
    """``main`` builds only the verb asked for (Typer builds every verb at each call)."""
    from typer.testing import CliRunner

    from codex32.cli import main

    runner = CliRunner()
    for args in ([verb, "--help"], ["--debug", verb, "--no-such-option"]):
        single = main._app_for(args)
        assert single is not main.app
        whole = runner.invoke(main.app, args, prog_name="codex32")
        alone = runner.invoke(single, args, prog_name="codex32")
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output)


@pytest.mark.parametrize("args", [[], ["--help"], ["rnu", "busybox"], ["--version"]])
def test_no_known_verb_gets_the_whole_app(args: list[str]) -> None:
    from codex32.cli import main

    assert main._app_for(args) is main.app

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

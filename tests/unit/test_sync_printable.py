"""What the engine prints of a set-up error: one line, no control characters."""

from __future__ import annotations

from codex32.errors import printable


def test_terminal_escapes_and_new_lines_are_shown_escaped() -> None:
    text = "\x1b]0;owned\x07\x1b[31mfine\nError: forged\r\x00"
    assert printable(text) == "\\x1b]0;owned\\x07\\x1b[31mfine\\x0aError: forged\\x0d\\x00"


def test_format_characters_are_escaped_and_letters_kept() -> None:
    # A right-to-left override would reorder what follows it on the terminal.
    assert printable("caf\u00e9 \u202egnp.exe") == "caf\u00e9 \\u202egnp.exe"


def test_long_text_is_cut() -> None:
    assert printable("x" * 5000, 100) == "x" * 97 + "..."
    assert printable(None) == "None"

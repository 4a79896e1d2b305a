"""``python -m codex32``: the CLI (through its entry point, as the console script)."""

from .cli.entry import main

main()

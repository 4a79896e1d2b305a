"""``python -m codex32``: the CLI (through its entry point, as the console script)."""

from codex32.cli.entry import main

main()

"""``python -m codex32``: the CLI."""

from .cli.main import main

main()

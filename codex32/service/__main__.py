"""``python -m codex32.service``: the same as ``codex32 serve``."""

from __future__ import annotations

import typer

from codex32.cli.serve import serve


def main() -> None:
    typer.run(serve)


if __name__ == "__main__":
    main()

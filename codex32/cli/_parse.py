"""Parsing of CLI words shared by the full CLI and the thin ``--host run`` (stdlib only)."""

from __future__ import annotations

import os


def parse_env(pairs: list[str], env_files: list[str]) -> dict[str, str]:
    """Docker's ``-e NAME=VALUE``, ``-e NAME`` (from the caller's environment), --env-file."""
    env: dict[str, str] = {}
    lines: list[str] = []
    for path in env_files:
        try:
            with open(path) as f:
                lines += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        except OSError as exc:
            raise ValueError(f"cannot read --env-file {path}: {exc.strerror}") from None
    for item in [*lines, *pairs]:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env

"""The engine's helpers (`python -S -m codex32._runtime.*`) find codex32 from any directory.

With ``-S`` the editable install's finder is not loaded: ``MONITOR_ENV``'s PYTHONPATH is
all that makes codex32 importable. A wrong path went unnoticed while the CLI ran from the
checkout (``-m`` puts the working directory on sys.path) and failed everywhere else.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from codex32._network import ports
from codex32._runtime import launch


@pytest.mark.parametrize(
    ("env", "module"),
    [
        (launch.MONITOR_ENV, "codex32._runtime.monitor"),
        (ports._PROXY_ENV, "codex32._network.portproxy"),
    ],
)
def test_helpers_import_codex32_outside_the_checkout(env: dict[str, str], module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"import {module}, codex32; print(codex32.__file__)"],
        env=env, cwd="/", capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    package = os.path.dirname(os.path.dirname(os.path.abspath(launch.__file__)))
    assert os.path.dirname(result.stdout.strip()) == package

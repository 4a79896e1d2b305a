"""Runs the engine-level resource tests against cgroup v2 in a stock-kernel VM.

``tests/vm/run_engine_v2.sh`` boots the VM and runs a short selection of
``test_resources.py`` (OOM kill reported, pids limit, pause, per-device I/O throttling
on a loop device) with real containers;
this checks that it ran them all and they passed. Skips only when the VM cannot be
built here, naming what is missing (``vng``, ``qemu-system-x86_64``, a kernel image).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import vm_tools_missing

pytestmark = pytest.mark.root

RUNNER = Path(__file__).resolve().parents[1] / "vm" / "run_engine_v2.sh"
EXPECTED = 4  # the runner's default selection: OOM, pids, pause, device throttling


def test_engine_resource_limits_pass_on_cgroup_v2_in_a_vm() -> None:
    if os.environ.get("CODEX32_REQUIRE_V2") == "1":
        pytest.skip("already inside the VM")
    missing = vm_tools_missing()
    if missing:
        pytest.skip(f"cannot boot the v2 VM, missing: {', '.join(missing)}")
    env = {k: v for k, v in os.environ.items() if k != "CODEX32_VM_TESTS"}
    env["VENV"] = str(Path(sys.executable).parents[1])
    result = subprocess.run(
        ["bash", str(RUNNER), "--durations=5"],
        capture_output=True,
        text=True,
        timeout=1500,  # TCG (no nested KVM here): ~6 min in all, slower on a busy host
        env=env,
        check=False,
    )
    output = result.stdout + result.stderr
    print(output[-4000:])
    assert result.returncode == 0, f"the engine's v2 tests failed in the VM:\n{output[-4000:]}"
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) == EXPECTED, "the VM ran fewer tests than expected"
    assert not re.search(r"\d+ (skipped|failed|error)", output)
    for figure in ("oom: exit 137", "pids: forked 9", "pause: frozen at", "throttle: "):
        assert figure in output, f"{figure!r} missing from the VM's output"

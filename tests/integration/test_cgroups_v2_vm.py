"""Runs the cgroup v2 suite in a stock-kernel VM (tests/vm/run_v2.sh) and checks it passed.

Skips only when the VM cannot be built here, naming what is missing: virtme-ng's
``vng``, ``qemu-system-x86_64`` or a kernel image in /boot.
"""

from __future__ import annotations

import re

import pytest
from helpers import run_v2_vm_suite

pytestmark = pytest.mark.root


def test_cgroup_v2_suite_passes_in_a_vm() -> None:
    output = run_v2_vm_suite("run_v2.sh", timeout=900)
    summary = re.search(r"(\d+) passed", output)
    assert summary and int(summary.group(1)) >= 8, "the VM ran fewer v2 tests than expected"

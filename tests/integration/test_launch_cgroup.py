"""Where PID 1 is made: forked straight into its cgroup on v2, moved into it on v1.

On cgroup v2 the set-up process forks PID 1 with ``clone3(CLONE_INTO_CGROUP)`` (no
``cgroup.procs`` write, so none of the RCU grace period the move waits out), except
from inside a user namespace (STRICT), whose root may not write the host's
``cgroup.procs``: there, as on v1's several hierarchies, the engine moves it. This
host (v1) runs the "moved" branch; the VM of ``tests/vm/run_engine_v2.sh`` the other.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import BUSYBOX

from codex32 import ContainerConfig, ContainerEngine, IsolationType
from codex32._engine import launching

pytestmark = pytest.mark.root


@pytest.mark.parametrize(
    "isolation", [IsolationType.STANDARD, IsolationType.STRICT], ids=lambda i: i.value
)
def test_pid1_is_forked_into_its_cgroup_on_v2(
    engine: ContainerEngine, isolation: IsolationType
) -> None:
    config = ContainerConfig(image=BUSYBOX, command=["sleep", "30"], isolation=isolation,
                             network="none")  # fmt: skip
    container = engine.containers.create(config)
    try:
        launch = launching.launch_container(
            engine, container, attach=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        launch.detach()
        expected = engine._cgroups.forks_into() and isolation is IsolationType.STANDARD
        assert launch.in_cgroup is expected
        container.reload()
        assert container.status == "running"
        lines = Path(f"/proc/{container.record.pid}/cgroup").read_text().splitlines()
        placed = [line for line in lines if line.endswith("/" + container.id)]
        assert placed, f"PID 1 is not in its cgroup: {lines}"
        print(f"launch: {isolation.value} in_cgroup={launch.in_cgroup} ({len(placed)} lines)")
    finally:
        container.remove(force=True)

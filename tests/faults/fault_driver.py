"""A caller of the public API, run as its own process so that a fault test can kill it.

``python fault_driver.py VERB NAME [ISOLATION NETWORK RESTART AUTO_REMOVE]`` (VERB:
run, create, crash, start, stop, restart, exec, rm); the
storage directory comes from ``CODEX32_STORAGE_DIR``, the pause point from
``CODEX32_FAULT_PAUSE`` (see ``codex32/_runtime/faults.py``). Exit 0 on success,
1 with the error's one line on stderr otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from codex32 import (
    Codex32Error,
    ContainerConfig,
    ContainerEngine,
    IsolationType,
    RestartPolicy,
)

#: A container that writes a numbered line every 20 ms (the log-loss check reads them).
COUNTER = "trap 'exit 0' TERM; i=0; while true; do i=$((i+1)); echo line$i; sleep 0.02; done"
#: The same, deaf to SIGTERM: a stop then waits its grace, so that at ``stop.signalled``
#: its PID 1 and monitor are surely still there to be killed.
DEAF = COUNTER.replace("trap 'exit 0' TERM", "trap '' TERM")
#: One that writes a few lines and fails: its restart policy brings it back.
CRASHER = "i=0; while [ $i -lt 5 ]; do i=$((i+1)); echo line$i; sleep 0.02; done; exit 3"


def _warm(engine: ContainerEngine, config: ContainerConfig) -> None:
    """``CODEX32_TEST_POOL``: start from a pooled sandbox. The pool is filled first,
    with the pause disarmed (the test holds its marker), then the test arms it."""
    if not engine.warm_pool(config, wait=20):
        raise SystemExit("the sandbox pool did not fill")
    fault_dir = Path(os.environ["CODEX32_FAULT_DIR"])
    (fault_dir / "warm").touch()
    while not (fault_dir / "armed").exists():
        time.sleep(0.005)


def main(argv: list[str]) -> int:
    verb, name = argv[0], argv[1]
    pool = 1 if os.environ.get("CODEX32_TEST_POOL") == "1" else 0
    with ContainerEngine(sandbox_pool=pool) as engine:
        try:
            if verb in ("run", "create", "crash"):
                isolation, network, restart, auto_remove = argv[2:6]
                deaf = argv[6:7] == ["deaf"]
                config = ContainerConfig(
                    image="busybox", name=name,
                    command=["sh", "-c", CRASHER if verb == "crash" else DEAF if deaf else COUNTER],
                    isolation=IsolationType(isolation), network=network,
                    restart_policy=RestartPolicy.parse(restart), auto_remove=auto_remove == "1",
                    stop_timeout=2,
                )  # fmt: skip
                if verb == "create":
                    engine.containers.create(config)
                else:
                    if pool:
                        _warm(engine, config)
                    engine.containers.run_detached(config)
            elif verb == "start":
                engine.containers.get(name).start()
            elif verb == "stop":
                engine.containers.get(name).stop(timeout=2)
            elif verb == "restart":
                engine.containers.get(name).restart(timeout=2)
            elif verb == "exec":
                result = engine.containers.get(name).exec_run(["sh", "-c", "echo exec-ran"])
                if result.exit_code != 0:
                    print(f"exec exited {result.exit_code}", file=sys.stderr)
                    return 1
            elif verb == "rm":
                engine.containers.get(name).remove(force=True)
            else:
                print(f"unknown verb {verb}", file=sys.stderr)
                return 2
        except Codex32Error as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What the verbs return, and the states in which a container counts as live."""

from __future__ import annotations

from dataclasses import dataclass

from codex32._store.state import ContainerState

#: States in which a container has a PID 1 (or is about to have one again).
LIVE = (ContainerState.RUNNING, ContainerState.PAUSED, ContainerState.RESTARTING)


@dataclass(frozen=True)
class RunResult:
    """What ``containers.run`` returns: the exit code and, when captured, the output."""

    exit_code: int
    output: bytes = b""
    error_output: bytes = b""
    container_id: str = ""

    @property
    def ok(self) -> bool:
        """Whether the command exited 0."""
        return self.exit_code == 0


@dataclass(frozen=True)
class ExecResult:
    """What ``exec_run`` returns (docker-py's ``exit_code`` and ``output``)."""

    exit_code: int
    output: bytes = b""
    error_output: bytes = b""

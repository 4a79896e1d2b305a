"""exec and export: a process in a running container, its files as a tar."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from codex32._engine import records, threads
from codex32._engine.results import ExecResult
from codex32._plan.plan import Plan, Step
from codex32._runtime.launch import MONITOR_ENV, FileArg, run_exec
from codex32._store.state import ContainerState
from codex32.config.container import check_no_newline, check_user_spec
from codex32.errors import ConfigError, ContainerError, StateError

if TYPE_CHECKING:
    from codex32._engine.container import Container
    from codex32._engine.engine import ContainerEngine

#: The steps of a container's plan that an exec'd process runs too.
EXEC_OPS = ("rlimits", "bounding_set", "user", "capabilities", "no_new_privs", "seccomp", "exec")


def exec_in(
    engine: ContainerEngine,
    container: Container,
    command: list[str],
    env: dict[str, str],
    user: str | None,
    workdir: str | None,
    stdin: FileArg,
    stdout: FileArg,
    stderr: FileArg,
    tty: bool = False,
    on_terminal: Callable[[int], None] | None = None,
) -> ExecResult:
    if not command:
        raise ConfigError("exec needs a command")
    check_exec_input(user, env)
    record = records.refresh(engine, container.id)
    if record.status is not ContainerState.RUNNING:
        raise StateError(
            f"cannot exec in a {record.status.value} container", container=container.name
        )
    plan = Plan.from_json((engine._store.directory(container.id) / "plan.json").read_text())
    steps = exec_steps(plan, command, env, user, workdir)
    records.event(engine, container, "exec_start", execID=" ".join(command)[:64])
    cgroup = engine._cgroups.handle(container.id)
    with threads.capture(stdout) as out, threads.capture(stderr) as err:
        terminal = None
        if tty:
            from codex32._runtime.terminal import ExecTerminal

            ptmx = f"/proc/{record.pid}/root/dev/pts/ptmx"
            terminal = ExecTerminal(stdin, out.target, ptmx)
            # Host root made it: give it to the container's root, whom a user
            # namespace maps elsewhere, so that the exec'd user can be given it.
            with contextlib.suppress(OSError):
                os.fchown(terminal.slave, records.host_uid_of_root(record.pid or 0), -1)
            if on_terminal is not None:
                on_terminal(terminal.master)
            terminal.start()
        try:
            slave = terminal.slave if terminal is not None else None
            code = run_exec(
                record.pid or 0, steps, container.name,
                stdin=stdin if slave is None else slave,
                stdout=out.target if slave is None else slave,
                stderr=err.target if slave is None else slave,
                on_created=cgroup.add_pid if cgroup is not None else None,
                tty=terminal is not None,
            )  # fmt: skip
        finally:
            if terminal is not None:
                terminal.finish()
        result = ExecResult(code, out.read(), err.read())
    records.event(engine, container, "exec_die", exitCode=str(code))
    return result


def export(engine: ContainerEngine, container: Container, path: Path) -> None:
    import json

    plan = Plan.from_json((engine._store.directory(container.id) / "plan.json").read_text())
    overlay = next(step for step in plan.steps if step["op"] == "overlay")
    shift = plan.uid_mappings[0]["hostID"] if plan.uid_mappings else 0
    spec = {k: overlay[k] for k in ("lower", "upper", "userxattr")} | {"id_shift": shift}
    tmp = path.with_name(f".{path.name}.codex32-tmp")
    try:
        with open(tmp, "wb") as out:
            result = subprocess.run(
                [sys.executable, "-S", "-m", "codex32._runtime.export", json.dumps(spec)],
                stdout=out, stderr=subprocess.PIPE, env=MONITOR_ENV, check=False,
            )  # fmt: skip
        if result.returncode != 0:
            raise ContainerError(
                f"export failed: {result.stderr.decode(errors='replace').strip()}",
                container=container.name, step="export",
            )  # fmt: skip
        os.replace(tmp, path)
    except OSError as exc:
        raise ContainerError(
            f"cannot write the export to {path}", container=container.name,
            step="export", errno=exc.errno, path=str(path),
            hint="check that the folder exists and is writable",
        ) from exc  # fmt: skip
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def check_exec_input(user: str | None, env: dict[str, str]) -> None:
    """The checks ``ContainerConfig`` makes on ``user`` and ``env``, for ``exec``."""
    try:
        if user is not None:
            check_user_spec(user)
        for key, value in env.items():
            if not key or "=" in key:
                raise ValueError(f"environment variable name {key!r} is empty or has '='")
            check_no_newline(key, "environment variable name")
            if "\x00" in value:
                raise ValueError(f"environment variable {key} has a NUL byte in its value")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def exec_steps(
    plan: Plan, command: list[str], env: dict[str, str], user: str | None, workdir: str | None
) -> list[Step]:
    """The container's own privilege steps, with the exec'd command swapped in."""
    steps = [dict(step) for step in plan.steps if step["op"] in EXEC_OPS]
    for step in steps:
        if step["op"] == "user" and user:
            step["user"] = user
        if step["op"] == "exec":
            base = dict(item.split("=", 1) for item in step["env"])
            base.update(env)
            step.update(
                args=command,
                init=None,
                env=[f"{k}={v}" for k, v in base.items()],
                cwd=workdir or step["cwd"],
            )
    return steps

"""``codex32 --host URL run``'s thin path: parsed as the full CLI parses, and light.

The thin path (``codex32.cli._remote_run``) must build the config the full CLI builds
for the same words, hand everything else to the full CLI, and import neither typer
nor pydantic nor the engine (the point of it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codex32.cli._remote_run import config_json, host_and_run_args, parse_run

REPO = Path(__file__).resolve().parents[2]
#: Modules the thin path must not load: typer (and its click, rich, pydantic), httpx,
#: and the engine's modules.
HEAVY = ("pydantic", "pydantic_core", "typer", "click", "rich", "httpx", "httpcore", "anyio",
         "pyroute2", "psutil", "codex32._engine", "codex32._network", "codex32._cgroups",
         "codex32._plan", "codex32._runtime", "codex32.config", "codex32.settings")  # fmt: skip

#: Runs the console script's entry point with ARGV and prints, at exit, the heavy
#: modules it loaded (last line of stderr).
REPORTER = """
import atexit, sys
heavy = {heavy!r}
def report():
    loaded = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
    sys.stderr.write("loaded: " + ",".join(loaded) + "\\n")
atexit.register(report)
sys.argv = ["codex32", *{argv!r}]
from codex32.cli.entry import main
main()
"""


def heavy_modules_of(argv: list[str], **run: Any) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run the CLI's entry point with ``argv``: the result, and the heavy modules loaded."""
    code = REPORTER.format(heavy=HEAVY, argv=argv)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
        **run,
    )  # fmt: skip
    last = (result.stderr.splitlines() or [""])[-1]
    assert last.startswith("loaded: "), result.stderr
    return result, last.removeprefix("loaded: ")


def test_run_through_an_unreachable_service_loads_nothing_heavy(tmp_path: Path) -> None:
    socket = f"unix://{tmp_path}/none.sock"
    result, loaded = heavy_modules_of(["--host", socket, "run", "--rm", "busybox", "/bin/true"])
    assert result.returncode == 125
    assert "cannot reach the service" in result.stderr
    assert loaded == ""


def test_the_full_cli_path_is_what_the_check_sees(tmp_path: Path) -> None:
    """The reporter sees typer and pydantic when the full CLI runs (an option the thin
    path leaves to it): the check above can fail."""
    socket = f"unix://{tmp_path}/none.sock"
    volume = f"{tmp_path}:/data"
    result, loaded = heavy_modules_of(["--host", socket, "run", "-v", volume, "busybox"])
    assert result.returncode == 125 and "cannot reach the service" in result.stderr
    assert "typer" in loaded.split(",") and "pydantic" in loaded.split(",")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--host", "unix:///s", "run", "busybox"], {}, ("unix:///s", ["busybox"])),
        (["-H", "tcp://h:1", "run", "--rm"], {}, ("tcp://h:1", ["--rm"])),
        (["--host=unix:///s", "run"], {}, ("unix:///s", [])),
        (["run", "busybox"], {"CODEX32_HOST": "unix:///e"}, ("unix:///e", ["busybox"])),
        (["--host", "unix:///s", "run"], {"CODEX32_HOST": "unix:///e"}, ("unix:///s", [])),
        (["run", "busybox"], {"CODEX32_HOST": ""}, None),
        (["run", "busybox"], {}, None),
        (["--debug", "--host", "unix:///s", "run"], {}, None),
        (["--host", "unix:///s", "ps"], {}, None),
        (["--host"], {}, None),
    ],
)
def test_the_host_and_the_verb(
    argv: list[str], env: dict[str, str], expected: tuple[str, list[str]] | None
) -> None:
    assert host_and_run_args(argv, env) == expected


#: ``run`` words the thin path takes; each must give the full CLI's config.
SAME = [
    ["--rm", "busybox", "/bin/true"],
    ["--rm", "--network", "none", "busybox", "/bin/true"],
    ["-d", "--name=web", "-e", "A=1", "-e", "FROM_CALLER", "--env=C=3", "-w", "/tmp",
     "-u", "1000:1000", "-h", "box", "--read-only", "--init", "--cap-add", "NET_ADMIN",
     "--cap-drop", "CHOWN", "--stop-signal", "SIGINT", "--stop-timeout", "3", "-P",
     "--network=bridge", "busybox", "--", "sh", "-c", "echo hi"],
    ["--isolation", "STRICT", "--entrypoint", "", "busybox", "true"],
    ["--entrypoint", "/bin/sh", "busybox", "-c", "true", "--rm"],
    ["--image", "busybox", "echo", "hi"],
    ["--", "busybox", "ls", "-l"],
    ["--name", "a", "--name", "b", "--detach", "busybox"],
    ["busybox"],
    ["--isolation", "", "busybox"],
]  # fmt: skip


def _full_cli_config(args: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The ``ContainerConfig`` the typer CLI builds for ``run ARGS`` (nothing is run)."""
    from typer.testing import CliRunner

    from codex32.cli import _common, main, run

    built: list[Any] = []
    real_guard = _common.guard

    def recording_guard(action: Any) -> Any:
        result = real_guard(action)
        built.append(result)
        return result

    class StopBeforeTheEngineError(Exception):
        pass

    def no_engine() -> Any:
        raise StopBeforeTheEngineError

    monkeypatch.setattr(run, "guard", recording_guard)
    monkeypatch.setattr(run, "engine", no_engine)
    outcome = CliRunner().invoke(main._app_for(["run"]), ["run", *args], prog_name="codex32")
    assert isinstance(outcome.exception, StopBeforeTheEngineError), outcome.output
    return built[0]


@pytest.mark.parametrize("args", SAME)
@pytest.mark.parametrize("level", [None, "strict"])
def test_the_thin_path_builds_the_full_clis_config(
    args: list[str], level: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codex32 import ContainerConfig

    for name in ("CODEX32_ISOLATION_LEVEL", "CONTAINER_ISOLATION_LEVEL",
                 "CODEX32_USERNS_UID_BASE", "CODEX32_USERNS_SIZE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    if level:
        monkeypatch.setenv("CONTAINER_ISOLATION_LEVEL", level)
    monkeypatch.setenv("FROM_CALLER", "from the caller")
    full = _full_cli_config(args, monkeypatch)
    found = parse_run(args)
    assert found is not None
    sent = config_json(found, dict(os.environ))
    assert sent is not None
    thin = ContainerConfig.model_validate(sent)
    assert thin.model_dump() == full.model_dump()
    # The engine applies an image's stop signal only when the config set none.
    assert ("stop_signal" in thin.model_fields_set) == ("stop_signal" in full.model_fields_set)
    assert found.get("detach", False) == ("-d" in args or "--detach" in args)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["-i", "busybox", "cat"], {}),
        (["-t", "busybox", "sh"], {}),
        (["-it", "busybox", "sh"], {}),
        (["-dP", "busybox"], {}),
        (["-eA=1", "busybox"], {}),
        (["--rm=yes", "busybox"], {}),
        (["-v", "/a:/b", "busybox"], {}),
        (["--memory", "1g", "busybox"], {}),
        (["--restart", "always", "busybox"], {}),
        (["--help"], {}),
        (["--name"], {}),
        (["--netw", "none", "busybox"], {}),
        ([], {}),
        (["bot.py"], {}),
        (["--stop-timeout", "x", "busybox"], {}),
        (["--stop-timeout", "-1", "busybox"], {}),
        (["--isolation", "paranoid", "busybox"], {}),
        (["--env-file", "/nonexistent/env", "busybox"], {}),
        (["busybox"], {"CODEX32_ISOLATION_LEVEL": "bogus"}),
        (["busybox"], {"CODEX32_USERNS_SIZE": "12"}),
    ],
)
def test_what_the_thin_path_leaves_to_the_full_cli(args: list[str], env: dict[str, str]) -> None:
    found = parse_run(args)
    assert found is None or config_json(found, env) is None

"""``codex32 --host URL run ...`` without typer and pydantic: the thin client path.

The full CLI builds its commands with typer (which validates every option with
pydantic) and a ``ContainerConfig`` with pydantic: ~100 ms of imports before the first
byte goes to a service that validates the config again anyway. Here ``run`` with
the common options is parsed by hand, exactly as Click parses it (options up to
the image, ``--opt value`` or ``--opt=value``, ``--`` ends them, the last of a
repeated option wins), sent as JSON, and followed as the full CLI does
(``_remote.run_attached``); output, errors and exit codes are the same.

Anything else returns None and the caller runs the full CLI, which then says what
it always said: another option, a combined or attached short option, ``--help``,
``-i``/``-t``, a bot's ``.py``, an isolation level from the environment that is
none, ``CODEX32_USERNS_*`` (the full CLI checks them), and a config the service
finds invalid (nothing was created; the full CLI names the problem as it always
has). Standard library only, up to the request (``tests/unit/test_cli_remote_run.py``
checks the imports).
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Flags of ``run``: option -> JSON field (set to true).
FLAGS = {
    "--rm": "auto_remove",
    "-d": "detach",
    "--detach": "detach",
    "--read-only": "read_only",
    "--init": "init",
    "-P": "publish_all",
    "--publish-all": "publish_all",
}
#: Options taking one value (the last given wins): option -> field.
VALUES = {
    "--name": "name",
    "--image": "image_option",
    "-w": "working_dir",
    "--workdir": "working_dir",
    "-u": "user",
    "--user": "user",
    "-h": "hostname",
    "--hostname": "hostname",
    "--isolation": "isolation",
    "--stop-signal": "stop_signal",
    "--stop-timeout": "stop_timeout",
    "--entrypoint": "entrypoint",
    "--network": "network",
}
#: Options that may be repeated (each value kept): option -> field.
LISTS = {
    "-e": "env",
    "--env": "env",
    "--env-file": "env_file",
    "--cap-add": "cap_add",
    "--cap-drop": "cap_drop",
}
LEVELS = ("minimal", "standard", "strict")
ISOLATION_VARIABLES = ("CODEX32_ISOLATION_LEVEL", "CONTAINER_ISOLATION_LEVEL")
#: Read with the default level by ``Settings.from_env``, which refuses bad values.
USERNS_VARIABLES = ("CODEX32_USERNS_UID_BASE", "CODEX32_USERNS_SIZE")


def host_and_run_args(argv: list[str], environ: dict[str, str]) -> tuple[str, list[str]] | None:
    """(service URL, the words after ``run``) of ``[--host URL] run ...``, else None.

    Only ``--host``/``-H`` may come before the verb (``--debug``, ``--version`` and
    the rest are the full CLI's); ``--host`` wins over ``CODEX32_HOST``, as Click's
    ``envvar``, where an empty variable counts as unset.
    """
    host = environ.get("CODEX32_HOST") or None
    words = iter(enumerate(argv))
    for index, word in words:
        if word in ("--host", "-H"):
            value = next(words, None)
            if value is None:
                return None
            host = value[1]
        elif word.startswith("--host="):
            host = word.removeprefix("--host=")
        elif word == "run":
            return (host, argv[index + 1 :]) if host else None
        else:
            return None
    return None


def parse_run(args: list[str]) -> dict[str, Any] | None:
    """The options and words of ``run``, as Click would give them, or None when the
    full CLI must parse them."""
    found: dict[str, Any] = {}
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in FLAGS and not equals:
            found[FLAGS[name]] = True
        elif name in VALUES or name in LISTS:
            if not equals:
                if index + 1 >= len(args):
                    return None  # Click's "requires an argument"
                index += 1
                value = args[index]
            if name in VALUES:
                found[VALUES[name]] = value
            else:
                found.setdefault(LISTS[name], []).append(value)
        else:
            return None  # another option, or short options run together
        index += 1
    rest = args[index:]
    found["image"] = rest[0] if rest else None
    found["args"] = rest[1:]
    return found


def default_isolation(environ: dict[str, str]) -> str | None:
    """The level a config gets when it names none (as ``config.default_isolation``),
    or None for a variable the full CLI has to refuse with its own message."""
    variable = next((v for v in ISOLATION_VARIABLES if environ.get(v)), None)
    if variable is None:
        return "standard"
    level = environ[variable].strip().lower()
    return level if level in LEVELS else None


def config_json(found: dict[str, Any], environ: dict[str, str]) -> dict[str, Any] | None:
    """The ``ContainerConfig`` the full CLI would build from these options, as JSON
    (only what they set: the service fills the model's defaults), or None."""
    from codex32.cli._parse import parse_env

    image_option = found.get("image_option")
    image = found["image"]
    chosen = image_option or image
    if not chosen or chosen.endswith(".py"):
        return None
    command = ([image] if image_option and image else []) + found["args"]
    if command[:1] == ["--"]:
        command = command[1:]
    level = found.get("isolation")
    if not level:
        if any(environ.get(v) for v in USERNS_VARIABLES):
            return None  # the full CLI reads (and may refuse) them with the default level
        level = default_isolation(environ)
    if level is None or level.lower() not in LEVELS:
        return None
    timeout = found.get("stop_timeout")
    if timeout is not None and not (timeout.isdigit() and timeout.isascii()):
        return None  # typer's message for a number that is not one
    try:
        env = parse_env(found.get("env", []), found.get("env_file", []))
    except ValueError:
        return None
    config: dict[str, Any] = {
        "image": chosen,
        "command": command,
        "env": env,
        "isolation": level.lower(),
        "auto_remove": bool(found.get("auto_remove")),
    }
    for field in ("name", "working_dir", "user", "hostname", "network"):
        if found.get(field) is not None:
            config[field] = found[field]
    for field in ("read_only", "init", "publish_all"):
        if found.get(field):
            config[field] = True
    for field in ("cap_add", "cap_drop"):
        if found.get(field):
            config[field] = found[field]
    if found.get("stop_signal"):
        config["stop_signal"] = found["stop_signal"]
    if timeout is not None:
        config["stop_timeout"] = int(timeout)
    if found.get("entrypoint") is not None:
        config["entrypoint"] = [found["entrypoint"]] if found["entrypoint"] else []
    return config


def _print_error(message: str) -> None:
    sys.stderr.write(f"codex32: error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str], environ: dict[str, str] | None = None) -> int | None:
    """Run ``codex32 --host URL run ...`` through the service: its exit code, or None
    when the full CLI has to do it (nothing was sent, or nothing was created)."""
    env = dict(os.environ if environ is None else environ)
    target = host_and_run_args(argv, env)
    if target is None:
        return None
    host, args = target
    found = parse_run(args)
    if found is None:
        return None
    config = config_json(found, env)
    if config is None:
        return None
    from codex32 import Codex32Error, ConfigError, LaunchError
    from codex32.cli._remote import Client, run_attached

    try:
        client = Client(host)
        if found.get("detach"):
            created = client.request(
                "POST", "/containers", params={"start": True}, json=config
            ).json()
            print(created["id"], flush=True)
            return 0
        sys.stdout.flush()
        code, _id = run_attached(
            client, config, stdout=sys.stdout.fileno(), stderr=sys.stderr.fileno(),
            forward_signals=True,
        )  # fmt: skip
        return code
    except ConfigError as exc:
        if exc.message.startswith("invalid configuration:"):
            return None  # refused before anything was made; the full CLI says why
        _print_error(str(exc))
    except LaunchError as exc:
        _print_error(str(exc))
        return exc.exit_code
    except (Codex32Error, ValueError, TimeoutError) as exc:
        _print_error(str(exc))
    except KeyboardInterrupt:
        sys.stderr.write("Aborted!\n")
        return 1
    except Exception as exc:  # as the full CLI's main
        sys.stderr.write(f"codex32: internal error: {type(exc).__name__}: {exc} (rerun with "
                         "--debug for the traceback)\n")  # fmt: skip
    return 125

"""``codex32 serve``: run the host service (REST + WebSocket API) in the foreground.

Kept apart from the service itself so that other verbs do not import FastAPI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from codex32.cli._common import fail


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            "-H",
            envvar="CODEX32_HOST",
            show_envvar=True,
            help="Unix socket to listen on (unix:///run/codex32/codex32.sock).",
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help="Also listen on TCP (needs a token: --init-token).",
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file (default /etc/codex32/policy.toml if present)."),
    ] = None,
    storage_dir: Annotated[
        Path | None, typer.Option("--storage-dir", help="Engine storage (CODEX32_STORAGE_DIR).")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="TLS certificate (TCP).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="TLS key (TCP).")] = None,
    docker_socket: Annotated[
        str | None,
        typer.Option("--docker-socket", help="Docker-compatible socket path; '' to not start it."),
    ] = None,
    socket_group: Annotated[
        str | None, typer.Option("--group", help="Group owning the sockets (codex32).")
    ] = None,
    make_token: Annotated[
        bool, typer.Option("--init-token", help="Make a new TCP bearer token, print it, exit.")
    ] = False,
    sandbox_pool: Annotated[
        int | None,
        typer.Option(
            "--sandbox-pool",
            metavar="N",
            help="Sandboxes kept ready per shape for fast starts (default 2; 0: none). "
            "Also CODEX32_SANDBOX_POOL.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning.")] = "info",
) -> None:
    """Run the host service: the REST and WebSocket API over the engine (foreground)."""
    from codex32 import Codex32Error

    try:
        from codex32.service.serve import make_token as new_token
        from codex32.service.serve import run
        from codex32.service.settings import ServiceSettings, socket_path

        settings = ServiceSettings.from_env(
            socket=socket_path(host) if host else None,
            listen=listen,
            policy_file=policy,
            storage_dir=storage_dir,
            tls_cert=tls_cert,
            tls_key=tls_key,
            socket_group=socket_group,
            sandbox_pool=sandbox_pool,
        )
        if docker_socket is not None:
            import dataclasses

            settings = dataclasses.replace(
                settings, docker_socket=Path(docker_socket) if docker_socket else None
            )
        if make_token:
            token, path = new_token(settings)
            typer.echo(token)
            typer.echo(f"written to {path} (mode 0600); clients send it as "
                       "Authorization: Bearer TOKEN", err=True)  # fmt: skip
            return
        run(settings, log_level=log_level)
    except Codex32Error as exc:
        fail(str(exc))

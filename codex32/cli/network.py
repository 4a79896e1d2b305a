"""``codex32 network create|ls|inspect|rm``: networks as objects, as Docker's CLI has them."""

from __future__ import annotations

import json
from functools import partial
from typing import Annotated

import typer

from codex32.cli._common import each_ref, engine, guard, table
from codex32.cli._usage import UsageGroup

app = typer.Typer(
    name="network",
    help="Manage networks (bridges with a subnet; containers join with --network NAME).",
    no_args_is_help=True,
    cls=UsageGroup,
)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The network's name.")],
    subnet: Annotated[str, typer.Option("--subnet", help="IPv4 subnet, e.g. 10.89.0.0/24.")],
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="The bridge's address (default: first host).")
    ] = None,
    masquerade: Annotated[
        bool,
        typer.Option(
            "--masquerade", help="NAT containers' outbound traffic to the host's address."
        ),
    ] = False,
) -> None:
    """Create a network and its bridge; print its name."""
    eng = engine()
    definition = guard(
        partial(eng.networks.create, name, subnet, gateway=gateway, masquerade=masquerade)
    )
    typer.echo(definition.name)


@app.command("ls")
def list_networks(
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only names.")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List networks (the default one, bridge, first)."""
    found = guard(engine().networks.list)
    if quiet:
        for network in found:
            typer.echo(network.name)
        return
    if json_output:
        typer.echo(json.dumps([n.to_json() for n in found], indent=2))
        return
    rows = [["NAME", "SUBNET", "GATEWAY", "BRIDGE", "MASQUERADE"]]
    rows += [
        [n.name, n.subnet, n.gateway, n.bridge, "yes" if n.masquerade else "no"] for n in found
    ]
    table(rows)


@app.command("inspect")
def inspect(
    names: Annotated[list[str], typer.Argument(help="Network names.")],
    _json_output: Annotated[
        bool, typer.Option("--json", help="Accepted for scripts: the output is always JSON.")
    ] = False,
) -> None:
    """Print networks' definitions and their containers as JSON."""
    eng = engine()
    typer.echo(json.dumps([guard(partial(eng.networks.inspect, n)) for n in names], indent=2))


@app.command("rm")
def remove(
    names: Annotated[list[str], typer.Argument(help="Network names.")],
) -> None:
    """Remove networks (refused while containers use them; not the default one)."""
    failed = each_ref(names, engine().networks.remove, lambda name, _none: typer.echo(name))
    if failed:
        raise typer.Exit(failed)

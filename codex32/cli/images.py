"""Image verbs: pull, load, save, images, image inspect/ls/rm/prune/tag, rmi, tag,
commit, login, logout. They call ``engine.images`` (the public API) and format."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from codex32.cli._common import each_ref, engine, fail, guard, table
from codex32.cli._usage import UsageGroup

if TYPE_CHECKING:
    from codex32 import ContainerImage

Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Insecure = Annotated[
    bool,
    typer.Option("--insecure-registry", help="Speak plain HTTP to the registry (no TLS)."),
]

image_app = typer.Typer(name="image", help="Manage images.", no_args_is_help=True, cls=UsageGroup)


@contextmanager
def _progress(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """One bar per layer on stderr, updated from the download threads."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

    bars = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
        console=Console(stderr=True), transient=False,
    )  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def update(digest: str, done: int, total: int) -> None:
        if digest not in tasks:
            tasks[digest] = bars.add_task(digest.removeprefix("sha256:")[:12], total=total or None)
        bars.update(tasks[digest], completed=done)

    with bars:
        yield update


def pull(
    reference: Annotated[str, typer.Argument(help="[REGISTRY/]NAME[:TAG|@DIGEST]")],
    insecure: Insecure = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress bars.")] = False,
) -> None:
    """Pull an image from a registry (Docker Hub by default)."""
    eng = engine()
    with _progress(quiet) as progress:
        image = guard(partial(eng.images.pull, reference, insecure=insecure, progress=progress))
    typer.echo(image.id)


def load(
    input_: Annotated[
        str,
        typer.Option("-i", "--input", help="A docker save archive, or an OCI layout (dir or tar)."),
    ],
) -> None:
    """Load images from an archive (`docker save`, `skopeo copy ... oci-archive:`)."""
    for image in guard(partial(engine().images.load, input_)):
        typer.echo(f"Loaded image: {', '.join(image.tags) or image.id}")


def save(
    references: Annotated[list[str], typer.Argument(help="Images to save.")],
    output: Annotated[str, typer.Option("-o", "--output", help="The archive to write.")],
) -> None:
    """Save images to an archive that `docker load` and `podman load` accept."""
    guard(partial(engine().images.save, references, output))


def _row(image: ContainerImage) -> list[str]:
    if image.kind == "template":
        return [image.name, "", "template", "built" if image.built else "not built",
                image.description]  # fmt: skip
    name, _, tag = image.name.rpartition(":") if ":" in image.name.split("/")[-1] else (
        image.name, "", "<none>")  # fmt: skip
    return [name or image.name, tag, image.id.removeprefix("sha256:")[:12], image.created[:19],
            _size(image.size)]  # fmt: skip


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return str(n)


def list_images(
    json_output: Json = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only image ids.")] = False,
) -> None:
    """List rootfs templates and images."""
    found = guard(engine().images.list)
    if json_output:
        typer.echo(json.dumps([i.model_dump() for i in found], indent=2))
        return
    if quiet:
        for image in found:
            if image.kind == "image":
                typer.echo(image.id.removeprefix("sha256:")[:12])
        return
    rows = [["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]]
    for image in found:
        for name in image.tags or [image.name]:
            rows.append(_row(image.model_copy(update={"name": name})))
    table(rows)


@image_app.command("inspect")
def inspect(references: Annotated[list[str], typer.Argument(help="Images.")]) -> None:
    """Show images' manifests and configs as JSON (Docker's fields)."""
    eng = engine()
    found = []
    code = each_ref(references, eng.images.inspect, lambda _ref, data: found.append(data))
    typer.echo(json.dumps(found, indent=2))
    raise typer.Exit(code)


def remove(
    references: Annotated[list[str], typer.Argument(help="Images (name:tag, digest or id).")],
    force: Annotated[bool, typer.Option("-f", "--force", help="Untag even if in use.")] = False,
) -> None:
    """Remove images (a tag while the image has others; else the image and its layers)."""
    eng = engine()

    def done(_ref: str, lines: list[str]) -> None:
        for line in lines:
            typer.echo(line[0].upper() + line[1:])

    raise typer.Exit(each_ref(references, partial(eng.images.remove, force=force), done))


@image_app.command("prune")
def prune() -> None:
    """Remove unnamed images no container uses, and unused layers and blobs."""
    for line in guard(engine().images.prune):
        typer.echo(line)


def tag(
    source: Annotated[str, typer.Argument(help="An image.")],
    target: Annotated[str, typer.Argument(help="The new NAME[:TAG].")],
) -> None:
    """Give an image another name."""
    guard(partial(engine().images.tag, source, target))


def commit(
    container: Annotated[str, typer.Argument(help="Container name or id.")],
    reference: Annotated[str, typer.Argument(help="The new image's NAME[:TAG].")],
) -> None:
    """Make a container's changes into a new image (one more layer)."""
    typer.echo(guard(partial(engine().images.commit, container, reference)).id)


def login(
    registry: Annotated[str, typer.Argument(help="Registry host[:port].")],
    username: Annotated[str, typer.Option("-u", "--username")],
    password: Annotated[str | None, typer.Option("-p", "--password")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    insecure: Insecure = False,
) -> None:
    """Check and save credentials for a registry (in the storage directory, mode 0600)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        fail("give the password with --password-stdin (or -p)")
    guard(partial(engine().images.login, registry, username, password or "", insecure=insecure))
    typer.echo("Login Succeeded")


def logout(registry: Annotated[str, typer.Argument(help="Registry host[:port].")]) -> None:
    """Forget the credentials saved for a registry."""
    if not guard(partial(engine().images.logout, registry)):
        fail(f"not logged in to {registry}")
    typer.echo(f"Removing login credentials for {registry}")


# ``codex32 image ls|rm|pull|load|save|tag`` (the top-level verbs are in cli/main.py).
image_app.command("ls")(list_images)
image_app.command("rm")(remove)
image_app.command("pull")(pull)
image_app.command("load")(load)
image_app.command("save")(save)
image_app.command("tag")(tag)

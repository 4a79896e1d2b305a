"""engine.containers and engine.images: create, run, list, get, prune, build."""

from __future__ import annotations

import contextlib
from typing import IO, TYPE_CHECKING

from codex32._engine import (
    create,
    launching,
    records,
    removal,
)
from codex32._engine.results import LIVE, RunResult
from codex32._runtime.launch import FileArg
from codex32._store.state import ContainerState
from codex32.config.container import ContainerConfig
from codex32.config.images import ContainerImage
from codex32.errors import Codex32Error, ContainerNotFoundError, DamagedRecordError

if TYPE_CHECKING:
    from codex32._engine.engine import ContainerEngine

from codex32._engine.container import Container


class ContainerCollection:
    """``engine.containers``: create, run, get, list."""

    def __init__(self, engine: ContainerEngine) -> None:
        self._engine = engine

    def create(self, config: ContainerConfig) -> Container:
        """Create a container (its directory, layers and record); do not start it."""
        return create.create(self._engine, config)

    def run(
        self,
        config: ContainerConfig,
        *,
        stdin: FileArg = None,
        stdout: FileArg = None,
        stderr: FileArg = None,
        forward_signals: bool = False,
    ) -> RunResult:
        """Create, start and wait for a container; return its exit code and output.

        The output is always captured in the container's log and returned; pass file
        descriptors (the CLI passes its own) to also stream it live. Failures to set
        up or execute raise ``LaunchError`` (exit code 125/126/127).
        """
        container = self.create(config)
        return launching.run_attached(self._engine,
            container, stdin=stdin, stdout=stdout, stderr=stderr,
            forward_signals=forward_signals,
        )  # fmt: skip

    def run_detached(self, config: ContainerConfig) -> Container:
        """Create and start a container in the background; return it running."""
        container = self.create(config)
        try:
            container.start()
        except BaseException:
            if config.auto_remove:
                container.remove(force=True)
            raise
        return container

    def prune(self) -> list[str]:
        """Remove every container that is not running; return their ids."""
        removed = []
        for container in self.list(all=True):
            if container.state in (ContainerState.EXITED, ContainerState.CREATED):
                with contextlib.suppress(Codex32Error):
                    container.remove()
                    removed.append(container.id)
        return removed

    def get(self, name_or_id: str) -> Container:
        """Look a container up by name, id or unique id prefix."""
        store = self._engine._store
        return Container(self._engine, records.refresh(self._engine, store.resolve(name_or_id)))

    def list(self, *, all: bool = False) -> list[Container]:
        """Running containers, or every container with ``all=True``.

        A damaged record is left out (``damaged()`` names it): one bad file does not
        hide the others.
        """
        store = self._engine._store
        containers = []
        for container_id in store.ids():
            try:
                record = records.refresh(self._engine, container_id)
            except Codex32Error:
                continue
            if all or record.status in LIVE:
                containers.append(Container(self._engine, record))
        return sorted(containers, key=lambda c: c.record.created_at)

    def damaged(self) -> tuple[DamagedRecordError, ...]:
        """Each container record that cannot be trusted, with its path and why."""
        found: list[DamagedRecordError] = []
        for container_id in self._engine._store.ids():
            try:
                self._engine._store.load(container_id)
            except DamagedRecordError as exc:
                found.append(exc)
            except ContainerNotFoundError:
                continue  # removed meanwhile
        return tuple(found)

    def remove_damaged(self, name_or_id: str) -> str:
        """Remove a container whose record is damaged; return its directory's name.

        Nothing of the record is used: whatever runs in the cgroup named by the
        directory is killed, that cgroup and the directory are removed, and names
        pointing at it dropped (``rm -f`` of a damaged record).
        """
        return removal.remove_damaged(self._engine, name_or_id)


class ImageCollection:
    """``engine.images``: the rootfs templates."""

    def __init__(self, engine: ContainerEngine) -> None:
        self._templates = engine._templates

    def list(self) -> list[ContainerImage]:
        """Every template, built or not."""
        return [self.get(name) for name in self._templates.names()]

    def get(self, name: str) -> ContainerImage:
        """One template's description."""
        template = self._templates.get(name)
        return ContainerImage(
            name=template.name,
            description=template.description,
            built=self._templates.is_built(template),
            path=str(self._templates.rootfs(template)),
            recipe=str(template.recipe_dir),
            command=list(template.command),
        )

    def build(
        self, name: str, *, quiet: bool = False, progress: IO[str] | None = None
    ) -> ContainerImage:
        """(Re)build a template from its recipe; its progress goes to ``progress``
        (a text file with a descriptor), else to stderr."""
        self._templates.build(self._templates.get(name), quiet=quiet, progress=progress)
        return self.get(name)

"""Rootfs templates: the recipes (package data, codex32/rootfs-templates/) and their trees.

A template is a folder with ``template.toml`` (description, build script, default
command, env, workdir, read-only host binds, paths kept writable) and a build script
that fills an empty directory. Built trees live under ``STORAGE/templates/NAME/``,
stamped with a hash of the recipe so that an edited recipe is rebuilt.

For user-namespaced (STRICT) containers the tree is also kept as an id-shifted copy
(every uid/gid + the mapping's host base): the container's root then owns its files,
overlay can copy them up, and nothing depends on the filesystem supporting idmapped
mounts. docs/architecture.md says why this beat idmapped mounts for now.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from codex32._images.image import HostBind, ImageConfig
from codex32.errors import ImageError, ImageNotFoundError

_STAMP = ".codex32-recipe"


@dataclass(frozen=True)
class Template:
    """A parsed recipe."""

    name: str
    recipe_dir: Path
    description: str
    build_script: str
    command: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    binds: tuple[HostBind, ...]
    writable: tuple[str, ...] = field(default_factory=tuple)

    def image_config(self) -> ImageConfig:
        """What the template gives its containers, as any image does."""
        return ImageConfig(self.command, self.env, self.workdir, self.binds, self.writable)

    def recipe_hash(self) -> str:
        """A digest of every file in the recipe folder (names and contents).

        Every create asks; reading and hashing the files each time was a sixth of the
        engine's work when many containers start at once. The digest is kept per
        process and recomputed when a file's name, size, mtime or ctime changes.
        """
        fingerprint = _fingerprint(str(self.recipe_dir))
        cached = _RECIPE_HASHES.get(str(self.recipe_dir))
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        digest = hashlib.sha256()
        for relative, *_stat in fingerprint:
            digest.update(relative.encode() + b"\0")
            digest.update((self.recipe_dir / relative).read_bytes())
        value = digest.hexdigest()[:16]
        _RECIPE_HASHES[str(self.recipe_dir)] = (fingerprint, value)
        return value


#: recipe directory -> (the fingerprint its digest was computed from, the digest).
_RECIPE_HASHES: dict[str, tuple[tuple[tuple[str, int, int, int], ...], str]] = {}


def _fingerprint(top: str) -> tuple[tuple[str, int, int, int], ...]:
    """Each regular file below ``top``: (relative path, size, mtime, ctime in ns), sorted."""
    found = []
    for directory, _dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(directory, name)
            try:
                info = os.stat(path)
            except FileNotFoundError:
                continue  # a dangling symlink, or a file removed as we look (as rglob did)
            if stat.S_ISREG(info.st_mode):
                found.append(
                    (os.path.relpath(path, top), info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                )
    return tuple(sorted(found))


class TemplateStore:
    """Finds recipes and builds them into the storage directory."""

    def __init__(self, recipes_dir: Path, storage_dir: Path) -> None:
        self.recipes_dir = recipes_dir
        self.root = storage_dir / "templates"
        # One build (or uid-shifted copy) at a time in this process: the service
        # creates from many threads, and two builds of one template share a staging
        # directory (named after the process) and would each replace the other's tree.
        self._lock = threading.RLock()
        self._held: set[str] = set()  # templates whose flock this object holds

    def names(self) -> list[str]:
        """Every recipe's name, sorted."""
        if not self.recipes_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.recipes_dir.glob("*/template.toml"))

    def get(self, name: str) -> Template:
        """Parse recipe ``name``; an unknown name says which ones exist."""
        manifest = self.recipes_dir / name / "template.toml"
        if "/" in name or not manifest.is_file():
            known = ", ".join(self.names()) or "none"
            raise ImageNotFoundError(
                f"no rootfs template named {name!r}",
                hint=f"known templates: {known} (in {self.recipes_dir})",
            )
        try:
            data = tomllib.loads(manifest.read_text())
            # Sources are resolved here, once: the set-up process refuses a symlink
            # in a bind source (it would mean the path changed since).
            binds = tuple(
                HostBind(
                    os.path.realpath(str(b["source"])),
                    str(b["target"]),
                    bool(b.get("optional", False)),
                )
                for b in data.get("bind", [])
            )
            return Template(
                name=name,
                recipe_dir=manifest.parent,
                description=str(data.get("description", "")),
                build_script=str(data.get("build", "build.sh")),
                command=tuple(str(c) for c in data.get("command", ["sh"])),
                env={str(k): str(v) for k, v in data.get("env", {}).items()},
                workdir=str(data.get("workdir", "/")),
                binds=binds,
                writable=tuple(str(p) for p in data.get("writable", [])),
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ImageError(f"template {name!r} has a broken template.toml: {exc}") from exc

    def rootfs(self, template: Template) -> Path:
        """Where the built tree of ``template`` lives."""
        return self.root / template.name / "rootfs"

    def is_built(self, template: Template) -> bool:
        """Built, and from the current recipe."""
        stamp = self.root / template.name / _STAMP
        return stamp.is_file() and stamp.read_text().strip() == template.recipe_hash()

    def ensure_built(self, template: Template, *, quiet: bool = False) -> Path:
        """Build the template unless the current recipe is already built.

        Concurrent starts (threads of a service, CLI processes) may all find it
        unbuilt: one builds under the template's lock, the others wait and use it.
        """
        if not self.is_built(template):
            with self._locked(template):
                if not self.is_built(template):
                    self.build(template, quiet=quiet)
        return self.rootfs(template)

    @contextlib.contextmanager
    def _locked(self, template: Template) -> Iterator[None]:
        """The template's lock: this object's thread lock, and an exclusive flock on the
        template's directory for other processes. Re-entered by the thread holding it
        (a build under ``ensure_built``): a second flock would wait on the first."""
        with self._lock:
            if template.name in self._held:
                yield
                return
            base = self.root / template.name
            base.mkdir(parents=True, exist_ok=True)
            fd = os.open(base / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._held.add(template.name)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                self._held.discard(template.name)
                os.close(fd)

    def build(
        self, template: Template, *, quiet: bool = False, progress: IO[str] | None = None
    ) -> Path:
        """Run the recipe into a fresh directory, then swap it in (never half-built).

        The recipe's output (its progress) goes to ``progress``, else to stderr."""
        with self._locked(template):
            return self._build(template, quiet=quiet, progress=progress)

    def _build(self, template: Template, *, quiet: bool, progress: IO[str] | None) -> Path:
        out = progress if progress is not None else sys.stderr
        base = self.root / template.name
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o711)
        os.chmod(base, 0o711)
        staging = base / f".build-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o755)
        script = template.recipe_dir / template.build_script
        if not quiet:
            print(f"building template {template.name} from {script}", file=out, flush=True)
        try:
            result = subprocess.run(
                ["/bin/sh", str(script), str(staging)],
                stdout=subprocess.DEVNULL if quiet else out,
                stderr=subprocess.PIPE,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise ImageError(
                    f"building template {template.name!r} failed (exit {result.returncode}): "
                    f"{result.stderr.strip()}",
                    path=str(script),
                )
            os.chmod(staging, 0o755)
            final = self.rootfs(template)
            for stale in base.glob("rootfs*"):
                shutil.rmtree(stale)
            staging.rename(final)
            (base / _STAMP).write_text(template.recipe_hash() + "\n")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not quiet:
            print(f"template {template.name} built at {final}", file=out, flush=True)
        return final

    def shifted_rootfs(self, template: Template, host_base: int) -> Path:
        """The tree with every uid/gid moved up by ``host_base`` (made once, cached)."""
        source = self.ensure_built(template, quiet=True)
        target = self.root / template.name / f"rootfs-uid{host_base}"
        if target.is_dir():
            return target
        with self._locked(template):
            if target.is_dir():
                return target
            return self._shift(template, source, target, host_base)

    def _shift(self, template: Template, source: Path, target: Path, host_base: int) -> Path:
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(source, staging, symlinks=True, ignore=_special_files)
            _shift_ids(source, staging, host_base)
            staging.rename(target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise ImageError(
                f"could not make the uid-shifted copy of template {template.name!r}",
                errno=exc.errno,
                path=str(target),
            ) from exc
        return target


def _special_files(directory: str, names: list[str]) -> set[str]:
    """Device nodes, fifos and sockets: never copied (copytree would read a device such
    as /dev/zero forever); a container's /dev is its own tmpfs anyway."""
    skipped = set()
    for name in names:
        mode = os.lstat(os.path.join(directory, name)).st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            skipped.add(name)
    return skipped


def _shift_ids(source: Path, copy: Path, base: int) -> None:
    """Give every entry of ``copy`` its ``source`` twin's owner plus ``base``.

    (copytree keeps modes and times but not owners.) The mode is set again after
    lchown, which clears set-id bits.
    """
    for dirpath, dirnames, filenames in os.walk(source):
        # Directories are handled when walked as dirpath; symlinks to directories
        # are listed in dirnames but never walked, so they are handled here.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [*filenames, *links, ""]:
            original = os.path.join(dirpath, name) if name else dirpath
            twin = os.path.join(copy, os.path.relpath(original, source))
            if not os.path.lexists(twin):
                continue  # a special file, not copied
            st = os.lstat(original)
            os.lchown(twin, st.st_uid + base, st.st_gid + base)
            if not os.path.islink(twin):
                os.chmod(twin, st.st_mode & 0o7777)

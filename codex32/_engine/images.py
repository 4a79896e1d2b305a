"""``engine.images``: rootfs templates and OCI images, and the root a container gets.

A container's ``image`` names a template (``busybox``) or an image reference
(``alpine:3.20``, ``localhost:5000/bots/trader@sha256:...``, an image id). A template
name wins when both could match, so the built-in names keep meaning the templates;
pulled images are then reached by their full name or tag (``busybox:latest``).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from codex32._engine.image_defaults import RootSource
from codex32._images import oci
from codex32._images.auth import credentials_for, remove_credentials, save_credentials
from codex32._images.reference import parse_reference
from codex32._images.store import ImageRecord, ImageStore
from codex32._images.templates import Template, TemplateStore
from codex32._images.unpack import UnpackLimits
from codex32._plan.profiles import Profile
from codex32.config.container import ContainerConfig
from codex32.config.images import ContainerImage
from codex32.errors import ConfigError, ImageError, ImageNotFoundError

if TYPE_CHECKING:
    from codex32._engine.engine import ContainerEngine

#: The kernel takes at most one page of mount options.
MOUNT_OPTIONS_MAX = 4096
Progress = Callable[[str, int, int], None]


def limits_from_env(id_range: int) -> UnpackLimits:
    """``CODEX32_LAYER_MAX_BYTES`` / ``_MAX_ENTRIES`` / ``CODEX32_LAYER_DEVICES``."""
    env = os.environ
    return UnpackLimits(
        max_bytes=int(env.get("CODEX32_LAYER_MAX_BYTES", 16 << 30)),
        max_entries=int(env.get("CODEX32_LAYER_MAX_ENTRIES", 1_000_000)),
        id_range=id_range,
        devices=env.get("CODEX32_LAYER_DEVICES", "") == "1",
    )


def _insecure_from_env() -> set[str]:
    return {h.strip() for h in os.environ.get("CODEX32_INSECURE_REGISTRIES", "").split(",") if h}


class ImageCollection:
    """``engine.images``: list, get, pull, load, save, remove, prune, commit, build."""

    def __init__(self, engine: ContainerEngine) -> None:
        self._engine = engine
        self._templates: TemplateStore = engine._templates
        settings = engine.settings
        self.store = ImageStore(settings.storage_dir, limits_from_env(settings.userns_size))

    # -- views ------------------------------------------------------------------------

    def list(self) -> builtins.list[ContainerImage]:
        """Every template (built or not), then every stored image, newest first."""
        found = [self._template_view(self._templates.get(n)) for n in self._templates.names()]
        return found + [self._image_view(r) for r in self.store.list()]

    def get(self, name: str) -> ContainerImage:
        """A template by name, else an image by reference or id."""
        if name in self._templates.names():
            return self._template_view(self._templates.get(name))
        return self._image_view(self._record(name))

    def inspect(self, name: str) -> dict[str, Any]:
        """Docker's ``image inspect`` fields for a stored image."""
        record = self._record(name)
        config = record.config
        return {
            "Id": record.id,
            "RepoTags": [parse_reference(n).familiar() for n in record.names],
            "RepoDigests": [parse_reference(n).familiar() for n in record.digests],
            "ManifestDigest": record.manifest_digest,
            "Created": config.get("created", ""),
            "Architecture": config.get("architecture", ""),
            "Os": config.get("os", ""),
            "Size": record.size,
            "Config": config.get("config") or {},
            "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in record.layers]},
            "Layers": [
                {
                    "digest": layer.blob,
                    "diff_id": layer.diff_id,
                    "size": layer.size,
                    "mediaType": layer.media_type,
                }
                for layer in record.layers
            ],
            "History": config.get("history") or [],
        }

    def _template_view(self, template: Template) -> ContainerImage:
        return ContainerImage(
            name=template.name,
            description=template.description,
            built=self._templates.is_built(template),
            path=str(self._templates.rootfs(template)),
            recipe=str(template.recipe_dir),
            command=list(template.command),
        )

    def _image_view(self, record: ImageRecord) -> ContainerImage:
        config = oci.image_config(record.config)
        names = [parse_reference(n).familiar() for n in record.names]
        return ContainerImage(
            name=names[0] if names else "<none>",
            description=str(record.config.get("created", "")),
            built=True,
            path="",
            recipe="",
            command=[*config.entrypoint, *config.command],
            kind="image",
            id=record.id,
            tags=names,
            digests=[parse_reference(n).familiar() for n in record.digests],
            size=record.size,
            created=str(record.config.get("created", "")),
        )

    def _record(self, name: str) -> ImageRecord:
        record = self.store.find(name)
        if record is None:
            raise ImageNotFoundError(
                f"no image named {name!r}",
                hint="`codex32 images` lists them; `codex32 pull` or `codex32 load` adds one",
            )
        return record

    # -- templates ----------------------------------------------------------------------

    def build(
        self, name: str, *, quiet: bool = False, progress: IO[str] | None = None
    ) -> ContainerImage:
        """(Re)build a template from its recipe; its progress goes to ``progress``
        (a text file with a descriptor), else to stderr."""
        self._templates.build(self._templates.get(name), quiet=quiet, progress=progress)
        return self.get(name)

    # -- pull, load, save ---------------------------------------------------------------

    def pull(
        self,
        reference: str,
        *,
        insecure: bool = False,
        progress: Progress | None = None,
        concurrency: int = 3,
    ) -> ContainerImage:
        """Pull ``reference`` from its registry (``insecure``: plain HTTP)."""
        from codex32._images.pull import pull_image
        from codex32._images.registry import RegistryClient

        ref = parse_reference(reference)
        settings = self._engine.settings
        insecure = insecure or ref.registry in _insecure_from_env()
        credentials = credentials_for(settings.storage_dir, ref.registry)
        with RegistryClient(ref.api_host, insecure=insecure, credentials=credentials) as client:
            record = pull_image(self.store, ref, client, progress=progress, concurrency=concurrency)
        return self._image_view(record)

    def load(self, path: str | os.PathLike[str]) -> builtins.list[ContainerImage]:
        """Load a ``docker save`` archive or an OCI layout (a directory or a tar)."""
        from codex32._images.archive import load_archive

        return [self._image_view(r) for r in load_archive(self.store, Path(path))]

    def save(self, references: builtins.list[str], path: str | os.PathLike[str]) -> None:
        """Write images to an archive that ``docker load`` and ``podman load`` accept."""
        from codex32._images.archive import save_archive

        chosen = []
        for text in references:
            record = self._record(text)
            named = [parse_reference(n) for n in record.names]
            try:
                ref = parse_reference(text)
                wanted = [r for r in named if str(r) == str(ref)] or named
            except ImageError:
                wanted = named
            chosen.append((record, wanted))
        save_archive(self.store, chosen, Path(path))

    def tag(self, source: str, target: str) -> ContainerImage:
        """Give an image another name."""
        record = self._record(source)
        ref = parse_reference(target)
        if ref.digest:
            raise ImageError("a tag cannot name a digest", hint="give NAME:TAG")
        layers = list(record.layers)
        return self._image_view(
            self.store.put_image(record.manifest_digest, record.id, layers, [ref])
        )

    # -- remove and prune -----------------------------------------------------------------

    def _users(self, image_id: str) -> builtins.list[str]:
        """Names of containers created from ``image_id``."""
        users = []
        for container_id in self._engine._store.ids():
            meta = self._engine._store.directory(container_id) / "image.json"
            with contextlib.suppress(FileNotFoundError, ValueError):
                if json.loads(meta.read_text()).get("id") == image_id:
                    with contextlib.suppress(Exception):
                        users.append(self._engine._store.load(container_id).name)
        return users

    def remove(self, name: str, *, force: bool = False) -> builtins.list[str]:
        """Untag ``name``; when no name is left (or it was an id), delete the image and
        the layers only it used. Refused while a container uses it, unless ``force``
        (which only untags, as Docker does)."""
        record = self._record(name)
        removed: builtins.list[str] = []
        by_name = None
        with contextlib.suppress(ImageError):
            ref = parse_reference(name)
            full = f"{ref.name}@{ref.digest}" if ref.digest else f"{ref.name}:{ref.tag}"
            if full in (*record.names, *record.digests):
                by_name = full
        users = self._users(record.id)
        # Docker's rule: a tag is only untagged while the image has another tag (its
        # pinned digests do not count); the last one deletes the image.
        if by_name and (len(record.names) > 1 or (by_name in record.digests and record.names)):
            self.store.untag(by_name)
            return [f"untagged {parse_reference(by_name).familiar()}"]
        if users and not force:
            raise ImageError(
                f"image {name} is used by container(s) {', '.join(users)}",
                hint="remove them first (codex32 rm)",
            )
        removed += [
            f"untagged {parse_reference(n).familiar()}" for n in (*record.names, *record.digests)
        ]
        if users:
            for n in (*record.names, *record.digests):
                self.store.untag(n)
            return removed
        self.store.delete(record.id)
        removed.append(f"deleted {record.id}")
        removed += self.store.gc(self._layers_in_use())
        return removed

    def prune(self) -> builtins.list[str]:
        """Remove images with no name that no container uses, then unused blobs and layers."""
        removed: builtins.list[str] = []
        for record in self.store.list():
            if not record.names and not record.digests and not self._users(record.id):
                self.store.delete(record.id)
                removed.append(f"deleted {record.id}")
        return removed + self.store.gc(self._layers_in_use())

    def _layers_in_use(self) -> set[str]:
        used: set[str] = set()
        for container_id in self._engine._store.ids():
            plan = self._engine._store.directory(container_id) / "plan.json"
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError, StopIteration):
                steps = json.loads(plan.read_text())["steps"]
                overlay = next(s for s in steps if s["op"] == "overlay")
                base = overlay.get("lower_base") or "/"
                used.update(os.path.join(base, lower) for lower in overlay["lower"])
        return used

    # -- commit -------------------------------------------------------------------------

    def commit(self, container: str, reference: str) -> ContainerImage:
        """A container's changes (its upper directory) as a new layer on its image, named
        ``reference``; the new image's config is the container's, as ``docker commit``."""
        from codex32._engine.image_commit import commit_container

        return self._image_view(commit_container(self, container, reference))

    # -- login --------------------------------------------------------------------------

    def login(
        self,
        registry: str,
        username: str,
        password: str,
        *,
        insecure: bool = False,
        check: bool = True,
    ) -> None:
        """Check the credentials against ``registry`` (its ``/v2/`` answers 200 with
        them), then remember them (mode 0600)."""
        if check:
            import httpx

            insecure = insecure or registry in _insecure_from_env()
            url = f"{'http' if insecure else 'https'}://{registry}/v2/"
            try:
                answer = httpx.get(url, auth=(username, password), timeout=30)
            except httpx.HTTPError as exc:
                raise ImageError(
                    f"cannot reach registry {registry}: {exc}",
                    hint="for a plain-HTTP registry pass --insecure-registry",
                ) from None
            challenge = answer.headers.get("WWW-Authenticate", "")
            if answer.status_code == 401 and challenge.lower().startswith("bearer"):
                # A token registry (Docker Hub): its token service checks the password.
                answer = _token_login(challenge, username, password)
            if answer.status_code != 200:
                raise ImageError(
                    f"login to {registry} failed (HTTP {answer.status_code})",
                    hint="check the user name and password",
                )
        save_credentials(self._engine.settings.storage_dir, registry, username, password)

    def logout(self, registry: str) -> bool:
        """Forget the credentials for ``registry``; False if there were none."""
        return remove_credentials(self._engine.settings.storage_dir, registry)

    # -- what a container is made of -------------------------------------------------------

    def root_for(
        self, config: ContainerConfig, profile: Profile | None, *, build: bool = False
    ) -> RootSource:
        """The root of a container of ``config``: a template's tree, or an image's layers
        (with owners shifted for a user namespace), made ready when ``profile`` is given."""
        name = config.image
        # One stat, not a listing of the recipes (twice) at every create.
        is_template = (
            "/" not in name
            and name not in ("", ".", "..")
            and (self._templates.recipes_dir / name / "template.toml").is_file()
        )
        record = None if is_template else self.store.find(name)
        if record is None:
            if not is_template:
                known = ", ".join(self._templates.names()) or "none"
                raise ImageNotFoundError(
                    f"no rootfs template or image named {name!r}",
                    hint=f"templates: {known}; `codex32 pull` or `codex32 load` adds an image",
                )
            template = self._templates.get(name)
            if build:
                self._templates.ensure_built(template)
            if profile is not None and profile.userns:
                base = self._engine.settings.userns_uid_base
                lower = self._templates.shifted_rootfs(template, base)
            else:
                lower = self._templates.rootfs(template)
            return RootSource(template.image_config(), (str(lower),), reference=name)
        if not record.layers:
            raise ImageError(f"image {name} has no layers")
        shift = (
            self._engine.settings.userns_uid_base if profile is not None and profile.userns else 0
        )
        layer_names: builtins.list[str] = []
        for index, layer in enumerate(record.layers):
            directory = self.store.layer_dir(layer.diff_id, shift)
            if profile is not None:
                directory = self.store.ensure_layer(
                    layer, f"{index + 1}/{len(record.layers)} ({layer.blob[:19]}) of {name}", shift
                )
            layer_names.append(self.store.short_link(directory))
        layer_names.reverse()  # overlay lists the top layer first
        options = len("lowerdir=" + ":".join(layer_names)) + 3 * 200
        if options > MOUNT_OPTIONS_MAX:
            raise ConfigError(
                f"image {name} has {len(layer_names)} layers, too many for one overlay mount",
                hint="squash it into fewer layers",
            )
        return RootSource(
            oci.image_config(record.config),
            tuple(layer_names),
            str(self.store.root),
            record.id,
            name,
        )


def _token_login(challenge: str, username: str, password: str) -> Any:
    """Ask the token service named in a Bearer challenge for a token with these
    credentials (what ``docker login`` does against Docker Hub)."""
    import re

    import httpx

    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    if "realm" not in params:
        raise ImageError(f"the registry's challenge names no token service: {challenge!r}")
    query = {"service": params.get("service", ""), "account": username}
    try:
        return httpx.get(params["realm"], params=query, auth=(username, password), timeout=30)
    except httpx.HTTPError as exc:
        raise ImageError(f"cannot reach the token service {params['realm']}: {exc}") from None


def _maybe_id(name: str) -> bool:
    return name.startswith("sha256:") or (
        len(name) >= 12 and all(c in "0123456789abcdef" for c in name)
    )

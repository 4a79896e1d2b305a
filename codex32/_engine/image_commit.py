"""``commit``: a container's upper directory as one more layer on its image (a template
container's tree becomes the base layer), with the container's config as the image's."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codex32._images import oci
from codex32._images.reference import parse_reference
from codex32._images.store import ImageRecord, ImageStore, LayerRef
from codex32.errors import ImageError

if TYPE_CHECKING:
    from codex32._engine.images import ImageCollection


def commit_container(images: ImageCollection, container: str, reference: str) -> ImageRecord:
    """The new image: the container's image's layers plus its changes, named
    ``reference``; its config is the container's (command, entrypoint, environment,
    working directory, user), as ``docker commit``."""

    ref = parse_reference(reference)
    if ref.digest:
        raise ImageError("commit names a tag, not a digest", hint="give NAME[:TAG]")
    handle = images._engine.containers.get(container)
    directory = images._engine._store.directory(handle.id)
    config = handle.config
    store = images.store
    meta: dict[str, Any] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        meta = json.loads((directory / "image.json").read_text())
    plan = json.loads((directory / "plan.json").read_text())
    shift = plan["uid_mappings"][0]["hostID"] if plan["uid_mappings"] else 0
    store.ensure_layout()
    tmp = store.root / "blobs" / "tmp"
    layers: list[LayerRef] = []
    if meta.get("id"):
        base = store.get_by_id(str(meta["id"]))
        image_json = json.loads(json.dumps(base.config))
        layers = list(base.layers)
    else:  # a template's container: the template's tree becomes the base layer
        template = images._templates.get(config.image)
        image_json = {
            "architecture": oci.host_platform()["architecture"],
            "os": "linux",
            "config": {
                "Cmd": list(template.command),
                "Env": [f"{k}={v}" for k, v in template.env.items()],
                "WorkingDir": template.workdir,
            },
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created_by": f"codex32 template {template.name}"}],
        }
        layers.append(_add_tree_layer(store, images._templates.rootfs(template), tmp, 0))
    layers.append(_add_tree_layer(store, directory / "upper", tmp, shift))
    run = image_json.setdefault("config", {})
    if config.command:
        run["Cmd"] = list(config.command)
    if config.entrypoint is not None:
        run["Entrypoint"] = list(config.entrypoint)
    if config.env:
        env = dict(str(e).partition("=")[::2] for e in run.get("Env") or [])
        env.update(config.env)
        run["Env"] = [f"{k}={v}" for k, v in env.items()]
    if config.working_dir:
        run["WorkingDir"] = config.working_dir
    if config.user:
        run["User"] = config.user
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    image_json["created"] = now
    image_json["rootfs"] = {"type": "layers", "diff_ids": [x.diff_id for x in layers]}
    history = image_json.setdefault("history", [])
    history.append({"created": now, "created_by": f"codex32 commit {handle.name}"})
    config_raw = json.dumps(image_json, separators=(",", ":")).encode()
    config_digest = store.add_blob_bytes(config_raw)
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {
            "mediaType": oci.OCI_CONFIG,
            "digest": config_digest,
            "size": len(config_raw),
        },
        "layers": [{"mediaType": x.media_type, "digest": x.blob, "size": x.size} for x in layers],
    }
    manifest_digest = store.add_blob_bytes(json.dumps(manifest).encode())
    return store.put_image(manifest_digest, config_digest, layers, [ref])


def _add_tree_layer(store: ImageStore, tree: Path, tmp: Path, shift: int) -> LayerRef:
    from codex32._images.commit import write_layer

    out = tmp / f"commit-{secrets.token_hex(6)}"
    try:
        built = write_layer(tree, out, shift=shift)
        store.commit_blob(out, built.blob, "committed layer")
    finally:
        out.unlink(missing_ok=True)
    layer = LayerRef(built.blob, built.diff_id, oci.OCI_LAYER_GZIP, built.size)
    store.ensure_layer(layer, f"committed layer {built.blob[:19]}")
    return layer

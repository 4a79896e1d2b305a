"""Pull an image: manifest (through an index for the host's platform), config, layers.

Layers download concurrently into ``blobs/partial/`` and are renamed into the store
only once their digest is right; each is unpacked (and so checked) before the image
is recorded. The image and its names are written last, so a pull that fails at any
point leaves no image, and nothing a later pull trusts without checking.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from codex32._images import oci
from codex32._images.reference import Reference
from codex32._images.registry import Progress, RegistryClient
from codex32._images.store import ImageRecord, ImageStore, LayerRef, layer_refs


def pull_image(
    store: ImageStore,
    ref: Reference,
    client: RegistryClient,
    *,
    progress: Progress | None = None,
    concurrency: int = 3,
) -> ImageRecord:
    """Fetch ``ref`` from ``client``'s registry into ``store``; return the image."""
    repo = ref.repository
    raw, kind, digest = client.manifest(repo, ref.reference)
    top_digest = digest
    document: dict[str, Any] = json.loads(raw)
    if kind in oci.INDEXES:
        entry = oci.choose_platform(document, str(ref))
        raw, kind, digest = client.manifest(repo, str(entry["digest"]))
        document = json.loads(raw)
    oci.check_manifest(document, str(ref))
    config_digest = str(document["config"]["digest"])
    if store.has_blob(config_digest):
        config_raw = store.read_blob(config_digest)
    else:
        config_raw = client.blob_bytes(repo, config_digest)
    config = oci.parse_config(config_raw, str(ref))
    layers = layer_refs(document, config, str(ref))
    store.ensure_layout()
    missing = [layer for layer in layers if not store.has_blob(layer.blob)]

    def fetch(layer: LayerRef) -> None:
        partial = store.partial_path(layer.blob)
        # One download per blob at a time: a concurrent pull of the same blob waits,
        # then finds it in the store (two writers would interleave in the partial).
        with _locked(partial.with_name(partial.name + ".lock")):
            if store.has_blob(layer.blob):
                return
            client.download(repo, layer.blob, partial, layer.size, progress)
            store.commit_blob(partial, layer.blob, f"{ref}: layer {layer.blob[:19]}")

    if missing:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(fetch, layer) for layer in missing]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    for index, layer in enumerate(layers):
        store.ensure_layer(layer, f"{index + 1}/{len(layers)} ({layer.blob[:19]}) of {ref}")
    store.add_blob_bytes(config_raw)
    store.add_blob_bytes(raw)
    names = [ref, Reference(ref.registry, ref.repository, None, top_digest)]
    if ref.digest:
        names = [Reference(ref.registry, ref.repository, None, ref.digest)]
        if digest != top_digest:
            names.append(Reference(ref.registry, ref.repository, None, digest))
    return store.put_image(digest, config_digest, layers, names)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # the file stays (unlinking it would let a third process in); prune

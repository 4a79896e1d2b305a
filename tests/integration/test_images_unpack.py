"""Hostile layers, made with tarfile, unpacked as root: each is refused or neutralised
with one line naming the layer and the entry, and nothing is written outside."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_support import (
    blobs_and_layers,
    entry,
    tar_layer,
    write_docker_archive,
)

from codex32 import ContainerEngine, ImageError
from codex32._images.unpack import LayerError, UnpackLimits, unpack_layer

pytestmark = pytest.mark.root


@pytest.fixture
def area(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(blob file, empty destination, a directory outside it that must stay untouched)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("original\n")
    dest = tmp_path / "layer"
    dest.mkdir()
    yield tmp_path / "blob", dest, outside


def unpack(blob: Path, data: bytes, dest: Path, **limits: int | bool) -> list[str]:
    blob.write_bytes(data)
    return unpack_layer(str(blob), str(dest), layer="L1", limits=UnpackLimits(**limits)).skipped  # type: ignore[arg-type]


def refused(blob: Path, data: bytes, dest: Path, **limits: int | bool) -> str:
    with pytest.raises(LayerError) as caught:
        unpack(blob, data, dest, **limits)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("layer L1"), message
    return message


def test_dotdot_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, outside = area
    message = refused(blob, tar_layer([entry("a/../../outside/victim", data=b"pwned")]), dest)
    assert "'a/../../outside/victim'" in message and "'..'" in message
    assert (outside / "victim").read_text() == "original\n"


def test_absolute_path_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, outside = area
    message = refused(blob, tar_layer([entry(f"{outside}/victim", data=b"pwned")]), dest)
    assert "absolute path" in message
    assert (outside / "victim").read_text() == "original\n"


def test_entry_through_symlink_refused_and_symlink_kept(area: tuple[Path, Path, Path]) -> None:
    blob, dest, outside = area
    layer = tar_layer(
        [
            entry("escape", tarfile.SYMTYPE, link=str(outside)),
            entry("escape/victim", data=b"pwned"),
        ]
    )
    message = refused(blob, layer, dest)
    assert "'escape/victim'" in message and "symlink" in message
    assert (outside / "victim").read_text() == "original\n"
    assert os.readlink(dest / "escape") == str(outside)  # the link itself is kept


def test_relative_symlink_out_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, outside = area
    layer = tar_layer(
        [
            entry("up", tarfile.SYMTYPE, link="../outside"),
            entry("up/victim", data=b"pwned"),
        ]
    )
    refused(blob, layer, dest)
    assert (outside / "victim").read_text() == "original\n"


def test_symlink_then_file_replaces_link_not_target(area: tuple[Path, Path, Path]) -> None:
    """A file entry named as an existing symlink replaces the link, never writes through."""
    blob, dest, outside = area
    layer = tar_layer(
        [
            entry("victim", tarfile.SYMTYPE, link=str(outside / "victim")),
            entry("victim", data=b"replaced"),
        ]
    )
    unpack(blob, layer, dest)
    assert (dest / "victim").read_text() == "replaced"
    assert not (dest / "victim").is_symlink()
    assert (outside / "victim").read_text() == "original\n"


def test_hard_link_outside_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, outside = area
    message = refused(
        blob, tar_layer([entry("h", tarfile.LNKTYPE, link=str(outside / "victim"))]), dest
    )
    assert "'h'" in message and "absolute path" in message
    message = refused(
        blob, tar_layer([entry("h", tarfile.LNKTYPE, link="../outside/victim")]), dest
    )
    assert "'..'" in message
    assert os.stat(outside / "victim").st_nlink == 1


def test_hard_link_through_symlink_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, outside = area
    layer = tar_layer(
        [
            entry("out", tarfile.SYMTYPE, link=str(outside)),
            entry("h", tarfile.LNKTYPE, link="out/victim"),
        ]
    )
    message = refused(blob, layer, dest)
    assert "'h'" in message and "symlink" in message
    assert os.stat(outside / "victim").st_nlink == 1


def test_hard_link_inside_kept(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    unpack(blob, tar_layer([entry("a", data=b"x"), entry("b", tarfile.LNKTYPE, link="a")]), dest)
    assert os.stat(dest / "a").st_ino == os.stat(dest / "b").st_ino


def test_device_nodes_skipped_unless_asked(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    layer = tar_layer([entry("dev/mem", tarfile.CHRTYPE), entry("dev/sda", tarfile.BLKTYPE)])
    assert unpack(blob, layer, dest) == ["dev/mem", "dev/sda"]
    assert not (dest / "dev" / "mem").exists()
    other = dest.parent / "with-devices"
    other.mkdir()
    unpack(blob, layer, other, devices=True)
    assert stat.S_ISCHR(os.lstat(other / "dev" / "mem").st_mode)


def test_setuid_kept_inside_mapping_only(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    layer = tar_layer(
        [
            entry("inside", data=b"x", mode=0o4755, uid=0),
            entry("outside", data=b"x", mode=0o6755, uid=70000, gid=70000),
        ]
    )
    unpack(blob, layer, dest, id_range=65536)
    inside, out = os.lstat(dest / "inside"), os.lstat(dest / "outside")
    assert inside.st_mode & 0o7777 == 0o4755 and inside.st_uid == 0
    assert out.st_mode & 0o7777 == 0o755 and (out.st_uid, out.st_gid) == (65534, 65534)


def test_shifted_owners(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    blob.write_bytes(tar_layer([entry("f", data=b"x", uid=1000, gid=1000, mode=0o2755)]))
    unpack_layer(str(blob), str(dest), layer="L1", shift=100000)
    info = os.lstat(dest / "f")
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (101000, 101000, 0o2755)
    assert os.lstat(dest).st_uid == 100000


def test_whiteouts_and_opaque_dirs(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    layer = tar_layer(
        [
            entry("etc", tarfile.DIRTYPE, mode=0o755),
            entry("etc/.wh.passwd"),
            entry("var", tarfile.DIRTYPE, mode=0o755),
            entry("var/.wh..wh..opq"),
        ]
    )
    unpack(blob, layer, dest)
    whiteout = os.lstat(dest / "etc" / "passwd")
    assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "var", "trusted.overlay.opaque") == b"y"
    assert not (dest / "etc" / ".wh.passwd").exists()
    user_ns = dest.parent / "userns"
    user_ns.mkdir()
    blob.write_bytes(layer)
    unpack_layer(str(blob), str(user_ns), layer="L1", shift=100000, userxattr=True)
    assert os.getxattr(user_ns / "var", "user.overlay.opaque") == b"y"


def test_malformed_whiteout_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    assert "malformed whiteout" in refused(blob, tar_layer([entry("a/.wh.")]), dest)


def test_decompression_bomb_bounded(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    bomb = gzip.compress(tar_layer([entry("zeros", data=bytes(8 << 20))]), compresslevel=9)
    assert len(bomb) < 64 << 10
    message = refused(blob, bomb, dest, max_bytes=1 << 20)
    assert "decompresses to more than 1048576 bytes" in message


def test_entry_count_bomb_bounded(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    layer = tar_layer([entry(f"f{i}") for i in range(200)])
    assert "more than 100 entries" in refused(blob, layer, dest, max_entries=100)


def test_zstd_layer(area: tuple[Path, Path, Path]) -> None:
    import zstandard

    blob, dest, _ = area
    plain = tar_layer([entry("hello", data=b"zstd\n")])
    unpack(blob, zstandard.ZstdCompressor().compress(plain), dest)
    assert (dest / "hello").read_text() == "zstd\n"


def test_not_a_tar_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    assert "not a readable tar stream" in refused(blob, gzip.compress(b"junk" * 1000), dest)


def test_diff_id_mismatch_refused(area: tuple[Path, Path, Path]) -> None:
    blob, dest, _ = area
    blob.write_bytes(tar_layer([entry("a", data=b"x")]))
    with pytest.raises(LayerError, match="is not the diff id"):
        unpack_layer(str(blob), str(dest), layer="L1", expect_diff_id="sha256:" + "0" * 64)


# -- through the engine: a failed load leaves no image and no layer --------------------


def test_hostile_archive_leaves_nothing(engine: ContainerEngine, tmp_path: Path) -> None:
    good = tar_layer([entry("bin", tarfile.DIRTYPE, mode=0o755), entry("bin/ok", data=b"x")])
    bad = tar_layer([entry("../../etc/evil", data=b"x")])
    archive = tmp_path / "hostile.tar"
    write_docker_archive(archive, [good, bad], tag="hostile/bad:1")
    before = blobs_and_layers(engine.settings.storage_dir)
    with pytest.raises(ImageError) as caught:
        engine.images.load(archive)
    message = str(caught.value)
    assert "layer 2/2" in message and "'../../etc/evil'" in message, message
    with pytest.raises(ImageError, match="no image named"):
        engine.images.get("hostile/bad:1")
    layers_after = blobs_and_layers(engine.settings.storage_dir)[1]
    staging = [p for p in (engine.settings.storage_dir / "images" / "layers").rglob(".staging-*")]
    assert staging == []
    # The good layer was checked and may stay (prune removes it); the bad one is not kept.
    assert len(layers_after - before[1]) == 1
    bad_blob = (
        engine.settings.storage_dir
        / "images"
        / "blobs"
        / "sha256"
        / hashlib.sha256(bad).hexdigest()
    )
    assert not bad_blob.exists()
    engine.images.prune()
    assert blobs_and_layers(engine.settings.storage_dir)[1] <= before[1]


def test_shifted_template_copy_skips_device_nodes(tmp_path: Path) -> None:
    """A template tree with /dev/zero in it: the STRICT copy must not read it forever."""
    from codex32._images.templates import TemplateStore

    recipes = tmp_path / "recipes" / "devs"
    recipes.mkdir(parents=True)
    (recipes / "template.toml").write_text('build = "build.sh"\ncommand = ["sh"]\n')
    (recipes / "build.sh").write_text(
        'mkdir -p "$1/dev" "$1/bin" && mknod "$1/dev/zero" c 1 5 && mkfifo "$1/dev/fifo" '
        '&& echo x > "$1/bin/file"\n'
    )
    store = TemplateStore(tmp_path / "recipes", tmp_path / "storage")
    template = store.get("devs")
    copy = store.shifted_rootfs(template, 100000)
    assert sorted(os.listdir(copy / "dev")) == []
    assert os.lstat(copy / "bin" / "file").st_uid == 100000

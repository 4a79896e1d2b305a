"""Recipe digests: what decides whether a built template is still current."""

from __future__ import annotations

import os
from pathlib import Path

from codex32._images.templates import TemplateStore


def _recipe(recipes: Path) -> None:
    (recipes / "box").mkdir(parents=True)
    (recipes / "box" / "template.toml").write_text('build = "build.sh"\ncommand = ["sh"]\n')
    (recipes / "box" / "build.sh").write_text("echo one\n")


def test_the_digest_follows_every_edit_of_the_recipe(tmp_path: Path) -> None:
    _recipe(tmp_path / "recipes")
    store = TemplateStore(tmp_path / "recipes", tmp_path / "storage")
    template = store.get("box")
    first = template.recipe_hash()
    assert template.recipe_hash() == first  # (served from the per-process cache)

    script = tmp_path / "recipes" / "box" / "build.sh"
    script.write_text("echo two\n")  # same size: the mtime tells
    os.utime(script, ns=(0, script.stat().st_mtime_ns + 1))
    second = template.recipe_hash()
    assert second != first

    (tmp_path / "recipes" / "box" / "files").mkdir()
    (tmp_path / "recipes" / "box" / "files" / "motd").write_text("hi\n")  # a new file
    third = template.recipe_hash()
    assert third not in (first, second)

    (tmp_path / "recipes" / "box" / "files" / "motd").unlink()
    assert template.recipe_hash() == second  # contents, not history

"""How a name, an id or an id prefix finds a container (``StateStore.resolve``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codex32._store.state import StateStore
from codex32.errors import ContainerNotFoundError

ID_A = "0a" + "1" * 62
ID_B = "0b" + "2" * 62


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    store = StateStore(tmp_path)
    store.ensure_layout()
    for container_id in (ID_A, ID_B):
        store.directory(container_id).mkdir()
    store.reserve_name("bot", ID_A)
    return store


def test_name_full_id_and_unique_prefix(store: StateStore) -> None:
    assert store.resolve("bot") == ID_A
    assert store.resolve(ID_B) == ID_B
    assert store.resolve("0b") == ID_B


def test_ambiguous_prefix_is_refused(store: StateStore) -> None:
    with pytest.raises(ContainerNotFoundError, match="matches 2 containers"):
        store.resolve("0")


@pytest.mark.parametrize("pattern", ["[0-9]*", "0?", "*", "0[a]", "..", ".", "0A", "0a/"])
def test_patterns_and_non_hex_text_name_no_container(store: StateStore, pattern: str) -> None:
    # A glob pattern once matched ids: `rm -f '[0-9]'` removed a container.
    with pytest.raises(ContainerNotFoundError, match="no such container"):
        store.resolve(pattern)


def test_a_whole_id_without_its_directory_is_no_container(store: StateStore) -> None:
    with pytest.raises(ContainerNotFoundError, match="no such container"):
        store.resolve("0c" + "3" * 62)

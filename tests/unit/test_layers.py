"""The layers of docs/architecture.md, checked: no module imports a layer above its own.

Each line may import from the lines below it. Packages on the same line are
independent of each other. The executor, the CLI and the service use the public API
(``codex32`` and its public modules), never the engine's private ``codex32._*``.
Imports under ``if TYPE_CHECKING:`` count too: a type from a higher layer is a sign
the code belongs elsewhere.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "codex32"

#: Layer of each top-level part of the package, lowest first.
LAYERS: dict[str, int] = {
    "codex32.errors": 0,
    "codex32.config": 0,
    "codex32.settings": 0,
    "codex32._linux": 1,
    "codex32._store": 1,
    "codex32._cgroups": 2,
    "codex32._network": 2,
    "codex32._images": 2,
    "codex32._plan": 3,
    "codex32._runtime": 4,
    "codex32._engine": 5,
    "codex32": 6,  # the public API: the package's __init__
    "codex32.executor": 7,
    "codex32.cli": 8,  # its ``bot`` verbs drive the executor
    "codex32.__main__": 9,  # ``python -m codex32``: the CLI's launcher
    "codex32.service": 9,
}
#: Within layer 0 the order is errors, config, settings.
L0_ORDER = ("codex32.errors", "codex32.config", "codex32.settings")
#: Upward imports allowed by name: the verb that starts the service, imported when run.
UPWARD = {("codex32.cli.serve", "codex32.service")}
#: Old paths kept for monitors started by an earlier version (re-exports only).
COMPAT = {
    "codex32._restart",
    "codex32._netrelease",
    "codex32._linux.ports",
    "codex32._linux.network",
}


def part_of(module: str) -> str:
    """The entry of LAYERS a dotted module name belongs to."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return prefix
    raise KeyError(f"{module} is in no layer: add its package to LAYERS")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a module's source."""
    found: list[tuple[int, str]] = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from codex32 import _x` imports the private module codex32._x.
            found += [
                (node.lineno, f"{target}.{a.name}")
                for a in node.names
                if target == "codex32" and a.name.startswith("_")
            ]
    return [(line, name) for line, name in found if name.split(".")[0] == "codex32"]


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None when it may."""
    if imported in COMPAT:
        return f"{imported} is an old path kept for old monitors: import the new one"
    src, dst = part_of(importer), part_of(imported)
    if src == dst or (src == "codex32.__main__" and dst == "codex32.cli"):
        return None
    if any(importer.startswith(a) and dst == b for a, b in UPWARD):
        return None
    if LAYERS[src] >= 7 and 7 <= LAYERS[dst] < LAYERS[src]:
        return None  # the service may use the CLI's and the executor's modules
    if dst == "codex32" and importer.startswith("codex32.") and LAYERS[src] < LAYERS[dst]:
        return "imports the public API from below it"
    private = imported.startswith("codex32._")
    if LAYERS[src] >= 7 and private:
        return f"{src} uses the public API only (codex32, not the engine's private modules)"
    if dst == "codex32":
        return None
    if LAYERS[dst] > LAYERS[src]:
        return f"layer {LAYERS[src]} ({src}) imports layer {LAYERS[dst]} ({dst})"
    if LAYERS[dst] == LAYERS[src]:
        if LAYERS[src] == 0 and L0_ORDER.index(dst) < L0_ORDER.index(src):
            return None
        return f"{src} and {dst} are on one line and independent"
    return None


def violations(root: Path = PACKAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        if module in COMPAT:
            continue
        for line, imported in imports_of(path.read_text(), module, path.name == "__init__.py"):
            why = violation(module, imported)
            if why:
                found.append(f"{path.relative_to(root.parent)}:{line}: {imported}: {why}")
    return found


def test_no_module_imports_above_its_layer() -> None:
    assert violations() == []


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "codex32"
    (root / "_store").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "_store" / "__init__.py").write_text("")
    (root / "_store" / "state.py").write_text("from .._engine.engine import ContainerEngine\n")
    (root / "cli").mkdir()
    (root / "cli" / "__init__.py").write_text("")
    (root / "cli" / "views.py").write_text("from codex32._store.logs import read_logs\n")
    found = violations(root)
    assert any("_store/state.py:1: codex32._engine.engine" in v for v in found), found
    assert any("cli/views.py:1: codex32._store.logs" in v for v in found), found


@pytest.mark.parametrize(
    "entry",
    ["codex32._runtime.init", "codex32._runtime.monitor", "codex32._runtime.forkserver",
     "codex32._runtime.exec", "codex32._runtime.export",
     "codex32._netrelease", "codex32._network.endpoint"],
)  # fmt: skip
def test_runtime_entry_points_import_no_third_party_package(entry: str) -> None:
    """The set-up process and the monitor run with ``python -S``: stdlib only."""
    code = (
        f"import sys, {entry}; "
        "third = ('pydantic', 'typer', 'pyroute2', 'psutil', 'pyseccomp'); "
        "bad = [m for m in third if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("old", sorted(COMPAT))
def test_old_paths_of_running_monitors_still_import(old: str) -> None:
    """A monitor of an earlier version imports these late in its life (the netlink
    and restart ones with site-packages, as it did)."""
    out = subprocess.run(
        [sys.executable, "-c", f"import {old}"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr

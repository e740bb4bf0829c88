"""The package's shape: imports only go down the layers, no module cycle, one home per library.

Read from the source with ``ast``: function-level imports included, since a cycle hidden inside a
function is still a cycle, and imports under ``if TYPE_CHECKING:`` too: they never run, but a type
hint that reaches up a layer or back into its importer is the same tangle of the modules' shapes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT, in_ci, needs

PACKAGE = ROOT / "softening"

#: Layer of each top-level part of the package (DESIGN.md: cli -> hpc -> workflows -> makers ->
#: stores, models, datasets -> analysis, settings, schemas; the error types under everything). A
#: module may import its own part and any lower layer, never a higher one nor a sibling.
LAYERS = {
    "cli": 7,
    "hpc": 5,
    "workflows": 4,
    "makers": 3,
    # The local executor and its worker sizing: runs any jobflow flow into a store, knows no
    # workflow; hpc (a --single-job script) and the CLI run flows with it.
    "execution": 3,
    "stores": 2,
    "models": 2,
    "datasets": 2,
    "analysis": 1,
    "settings": 1,
    "schemas": 1,
    "naming": 1,
    "mp_rules": 1,
    "processes": 1,  # worker processes that end with their parent (hpc's jobs, models' graphs)
    "softening": 1,  # the package root: __version__
    "errors": 0,
    "jsonio": 0,  # the strict JSON encoder every JSON writer uses (imports nothing of the package)
    # The doctor's verdicts and what a layer's checks return: each layer's ``health`` module
    # contributes its own checks, the CLI runs them (imports nothing of the package).
    "health": 0,
    "defaults": 0,  # the study's default values that makers, options and CLI read (imports nothing)
}

#: Imports between parts of the same layer that are allowed (models wrap structures as datasets
#: do); any other sideways import is a layering error.
SIDEWAYS = {("models", "datasets")}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _imports(path: Path, mods: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports (anywhere in the file: module level, in functions,
    under ``if TYPE_CHECKING:``)."""
    return _imports_in(path.read_text(), mods)


def _imports_in(source: str, mods: dict[str, Path] | set[str]) -> set[str]:
    """The package modules (of ``mods``) that the Python ``source`` imports."""
    tree = ast.parse(source)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("softening")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("softening"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in mods else node.module)
    return {m for m in out if m in mods}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "softening"


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(path, mods) - {name} for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_part_has_a_layer():
    assert {_part(m) for m in _modules()} <= set(LAYERS)


def test_imports_only_go_down_the_layers():
    wrong = []
    for module, imported in _graph().items():
        a = _part(module)
        for target in imported:
            b = _part(target)
            if a == b or (a, b) in SIDEWAYS:
                continue
            if LAYERS[b] >= LAYERS[a]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    assert not _cycles(_graph())


def test_the_checker_sees_a_cycle_and_a_wrong_direction():
    """The checks above can fail: a made-up graph with both faults is caught."""
    graph = {
        "softening.models.a": {"softening.stores.b"},
        "softening.stores.b": {"softening.models.a"},
    }
    assert _cycles(graph) == [["softening.models.a", "softening.stores.b"]]
    assert ("models", "stores") not in SIDEWAYS and LAYERS["stores"] >= LAYERS["models"]


def test_the_checker_sees_imports_under_type_checking_and_in_functions():
    """Imports for type hints only, and imports inside functions, are edges of the graph too."""
    source = """
from typing import TYPE_CHECKING

from softening.errors import InputError

if TYPE_CHECKING:
    from softening.models.backends import LoadedModel
    import softening.stores


def f():
    from softening.models import trust
"""
    mods = {
        "softening.errors",
        "softening.models",
        "softening.models.backends",
        "softening.models.trust",
        "softening.stores",
    }
    assert _imports_in(source, mods) == mods - {"softening.models"}


@pytest.mark.parametrize("library", ["chgnet", "matgl", "mace"])
def test_a_model_family_library_is_imported_in_at_most_two_modules(library):
    users = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == library or n.startswith(library + ".") for n in names):
                users.add(str(path.relative_to(ROOT)))
    assert 1 <= len(users) <= 2, users


def test_needs_skips_off_ci_and_fails_on_ci(monkeypatch, tmp_path):
    """A test that reads ../shared fails on CI when it is absent, instead of skipping silently."""
    missing = tmp_path / "no-such-file"

    def reads_shared_data():
        return "ran"

    monkeypatch.setenv("CI", "true")
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="absent"):
        needs(missing)(reads_shared_data)()
    assert needs(tmp_path)(reads_shared_data)() == "ran"  # present: the test itself
    monkeypatch.setenv("CI", "")
    skipped = needs(missing)(reads_shared_data)
    assert [m.name for m in skipped.pytestmark] == ["skip"]

"""The package's modules import one another without circles.

The graph is read from the source (no module is imported): every ``import effssl_plugin.x``
and ``from effssl_plugin[.x] import ...`` in a module, at module level, inside functions and
under ``TYPE_CHECKING`` alike, is an edge. A circle, even one that Python resolves through a
function-level import, means two modules that each need the other: neither can be read,
tested or changed alone.

The package root (``effssl_plugin/__init__.py``) is left out: Python has finished executing it
before any submodule starts, and submodules read from it only the names it defines
(``__version__``, the resolver); its own edges are re-exports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "effssl_plugin"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE


def imported_modules(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package's modules (among ``modules``) that ``tree`` imports, wherever it does."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y, from . import x
                base = f"{PACKAGE}.{base}" if base else PACKAGE
            # ``from effssl_plugin import method`` names a module; other names are the module's
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (the package root left out)."""
    files = {f"{PACKAGE}.{f.stem}": f for f in sorted(source.glob("*.py")) if f.stem != "__init__"}
    modules = set(files)
    return {
        name: imported_modules(ast.parse(file.read_text()), modules) - {name}
        for name, file in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """Module-level, function-level, relative and ``TYPE_CHECKING`` imports are all edges."""
    (tmp_path / "__init__.py").write_text("from effssl_plugin.a import x\n")
    (tmp_path / "a.py").write_text("def f():\n    from effssl_plugin.b import y\n")
    (tmp_path / "b.py").write_text("from typing import TYPE_CHECKING\nfrom . import c\n")
    (tmp_path / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import effssl_plugin.a\n"
    )
    (tmp_path / "d.py").write_text("import os\nfrom effssl_plugin import __version__\n")
    graph = import_graph(tmp_path)
    assert graph == {
        "effssl_plugin.a": {"effssl_plugin.b"},
        "effssl_plugin.b": {"effssl_plugin.c"},
        "effssl_plugin.c": {"effssl_plugin.a"},
        "effssl_plugin.d": set(),
    }
    assert find_cycle(graph) == ["effssl_plugin.a", "effssl_plugin.b", "effssl_plugin.c"] + [
        "effssl_plugin.a"
    ]
    assert find_cycle({"x": {"y"}, "y": set()}) is None

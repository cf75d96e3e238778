"""The package's shape, checked: no import cycles, dependencies in one direction, light faces.

The import graph is read from the source (``ast``), with every import a module makes,
at its top or inside a function (a function-level import is a dependency that runs later,
not a way around a cycle); imports under ``if TYPE_CHECKING:`` are left out, and a lazy
package face (``__init__.pyi``) depends on the submodules it names.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ilias"
HEAVY = ("torch", "timm", "open_clip", "dask", "distributed", "qdrant_edge", "qdrant_client")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The ilias modules ``path`` imports (``from a.b import c`` names ``a.b.c`` where that
    is a module, else ``a.b``)."""
    name = module_name(path)
    package = name if path.name.startswith("__init__") else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("ilias"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("ilias"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imported_modules(p, modules) for p in paths}
    for stub in PACKAGE.rglob("__init__.pyi"):  # lazy faces load what their stub names
        graph[module_name(stub)] |= imported_modules(stub, modules)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def stage(module: str) -> str:
    return ".".join(module.split(".")[:2])


# stage -> the stages it must never import (DESIGN.md: cli, serve -> query, rerank, eval,
# indexing, loader -> types, config; query -> indexing; rerank sees a collection view).
FORBIDDEN = {
    "ilias.types": {"ilias.config", "ilias.loader", "ilias.indexing", "ilias.query",
                    "ilias.rerank", "ilias.eval", "ilias.demo", "ilias.cli", "ilias.serve"},
    "ilias.config": {"ilias.loader", "ilias.indexing", "ilias.query", "ilias.rerank",
                     "ilias.eval", "ilias.demo", "ilias.cli", "ilias.serve"},
    "ilias.eval": {"ilias.loader", "ilias.indexing", "ilias.query", "ilias.rerank",
                   "ilias.demo", "ilias.cli", "ilias.serve"},
    "ilias.loader": {"ilias.indexing", "ilias.query", "ilias.rerank", "ilias.eval",
                     "ilias.demo", "ilias.cli", "ilias.serve"},
    "ilias.rerank": {"ilias.indexing", "ilias.query", "ilias.demo", "ilias.cli", "ilias.serve"},
    "ilias.indexing": {"ilias.query", "ilias.rerank", "ilias.eval", "ilias.demo", "ilias.cli",
                       "ilias.serve"},
    "ilias.query": {"ilias.demo", "ilias.cli", "ilias.serve"},
    # serve sits above query, beside cli: it may use every stage, nothing uses it
    "ilias.serve": {"ilias.cli", "ilias.demo"},
}  # fmt: skip


def test_dependencies_point_one_way():
    wrong = sorted(
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if stage(target) in FORBIDDEN.get(stage(module), set())
        or (
            stage(target) in {"ilias.cli", "ilias.serve"}
            and stage(module) not in {stage(target), "ilias.__main__"}
            # ilias serve: the command imports the service inside its function
            and (module, stage(target)) != ("ilias.cli", "ilias.serve")
        )
    )
    assert wrong == []


@pytest.mark.parametrize(
    "modules",
    [
        "ilias.config",
        "ilias.types",
        "ilias.eval",
        "ilias.rerank.chamfer",
        "ilias.indexing, ilias.query, ilias.rerank, ilias.loader",
        "ilias.indexing.store.schema",
    ],
)
def test_light_modules_import_nothing_heavy(modules):
    code = f"import sys, {modules}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"

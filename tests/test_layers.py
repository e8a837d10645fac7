"""Imports point down only (DESIGN "Layers"), and no module imports itself back in a loop.

Every import statement of the project's packages counts, the ones inside functions too: a
deferred import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent

# Lowest first; a package may import its own modules and any package of a lower rank.
# The results store (store/) sits right above ground.
RANKS = {
    "ground": 0,
    "store": 1,
    "device_runner": 2,
    "compilers": 3,
    "cost_model": 4,
    "reports": 4,
    "auditor": 5,
}
PACKAGES = [name for name in RANKS if (ROOT / name).is_dir()]


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None for anything not ours."""
    top = module.split(".")[0]
    return top if top in RANKS else None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of ours one module's import statements name (`from pkg import sub` names
    pkg.sub when that is a module, else pkg)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if layer_of(m)}


def import_graph() -> nx.DiGraph:
    modules = project_modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        tree = ast.parse(path.read_text(), filename=str(path))
        for target in imported(tree, name, path.name == "__init__.py", set(modules)):
            graph.add_edge(name, target)
    return graph


def test_imports_point_down():
    wrong = []
    for source, target in import_graph().edges:
        low, high = layer_of(target), layer_of(source)
        if low != high and RANKS[low] >= RANKS[high]:
            wrong.append(f"{source} ({high}) imports {target} ({low})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(wrong))


def cycles(graph: nx.DiGraph) -> list[str]:
    return [" -> ".join(c + c[:1]) for c in nx.simple_cycles(graph) if len(c) > 1]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(found)


def test_a_cycle_through_a_deferred_import_is_found():
    graph = nx.DiGraph([("compilers.a", "device_runner.b"), ("device_runner.b", "compilers.a")])
    assert cycles(graph) in (["compilers.a -> device_runner.b -> compilers.a"],
                             ["device_runner.b -> compilers.a -> device_runner.b"])


def test_the_walk_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from compilers.base import Target\n")
    assert imported(tree, "device_runner.x", False, {"compilers.base"}) == {"compilers.base"}


def test_a_store_module_is_the_store_layer():
    assert layer_of("store") == layer_of("store.schema") == "store"
    assert layer_of("auditor.pipeline") == "auditor" and layer_of("numpy") is None

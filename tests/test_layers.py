"""The package's layers: data -> sampling/models -> meta -> engine -> experiments -> report -> commands.

Every ``import`` of a ``gnn_cml`` module (at module level or inside a function) goes to the same
layer or a lower one, the imports form no circle, and no module reaches a private (``_name``)
attribute of another module.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import gnn_cml

PACKAGE = Path(gnn_cml.__file__).resolve().parent
# Lowest first. Top-level modules: errors and the method registry (no torch) sit below everything;
# config (run settings) reads the data registry; cli is the command line.
LAYERS = [
    ("gnn_cml", "gnn_cml.errors", "gnn_cml.methods"),
    ("gnn_cml.data",),
    ("gnn_cml.sampling", "gnn_cml.models", "gnn_cml.config"),
    ("gnn_cml.meta",),
    ("gnn_cml.engine",),
    ("gnn_cml.experiments",),
    ("gnn_cml.report",),
    ("gnn_cml.commands", "gnn_cml.cli", "gnn_cml.__main__"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Stdlib-only console output (status lines, progress bars) that any layer may print through; the test
# below checks it stays a leaf (it imports nothing of gnn_cml above the bottom layer).
LEAF_UTILITIES = ("gnn_cml.engine.progress",)


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: Set[str]) -> List[str]:
    """The gnn_cml modules ``path`` imports (``from a import b`` counts ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                found.append(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return [m for m in found if m == "gnn_cml" or m.startswith("gnn_cml.")]


def _graph() -> Dict[str, Set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {m for m in _imports(path, name, known) if m != name} for name, path in modules.items()}


def test_no_module_imports_a_higher_layer():
    graph = _graph()
    upward = [f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
              for a, targets in graph.items() for b in sorted(targets)
              if _layer(b) > _layer(a) and b not in LEAF_UTILITIES]
    assert not upward, "upward imports:\n" + "\n".join(upward)
    for leaf in LEAF_UTILITIES:  # a leaf only reaches the bottom layer (lazily: engine.distributed's rank)
        assert all(_layer(m) == 0 or m == "gnn_cml.engine.distributed" for m in graph[leaf]), (leaf, graph[leaf])


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_edges(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """Module imports, with a package's ``__init__`` importing its submodules left out (they are the
    package's public face, not a dependency of its parts)."""
    return {a: {b for b in bs if not b.startswith(a + ".")} for a, bs in graph.items()}


def test_imports_form_no_circle():
    cycles = _cycles(_package_edges(_graph()))
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_checks_can_fail():
    """A circle and an upward import in a made-up graph are found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("gnn_cml.meta.tlp") > _layer("gnn_cml.config") > _layer("gnn_cml.data.registry")
    assert _layer("gnn_cml.report.table3") > _layer("gnn_cml.experiments.graph")


def test_no_private_name_crosses_a_module():
    """``from gnn_cml.x import _y`` or ``x._y`` on an imported gnn_cml module is refused (tests may)."""
    modules = _modules()
    bad = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gnn_cml"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        bad.append(f"{name}: from {node.module} import {a.name}")
                    full = f"{node.module}.{a.name}"
                    if full in modules:
                        aliases[a.asname or a.name] = full
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("gnn_cml"):
                        aliases[a.asname or a.name.split(".")[0]] = a.name
        own = _private_names_defined(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id not in ("self", "cls")):
                continue
            if node.value.id in aliases or node.attr not in own:  # another module's private name
                bad.append(f"{name}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not bad, "private names used outside their module:\n" + "\n".join(bad)


def _private_names_defined(tree: ast.AST) -> Set[str]:
    """``_names`` a module defines: functions, classes, assigned attributes and keyword arguments
    (``set_defaults(_run=...)``), so that ``obj._name`` on its own objects is allowed."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    return {n for n in names if n.startswith("_")}

"""The package's import graph: no circles, and each layer imports only the layers below it.

The graph is read from the source with `ast`, counting every import (module level and inside
functions alike: a circle through a function-local import is still a circle).
"""
import ast
from pathlib import Path

import onetok

PACKAGE_ROOT = Path(onetok.__file__).parent


def module_name(path: Path) -> str:
    parts = ("onetok",) + path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the onetok modules it imports (`from pkg import name` counts as pkg.name when that is a module)."""
    paths = {module_name(p): p for p in PACKAGE_ROOT.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base)
        graph[name] = {t for t in targets if t in paths and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_known_imports():
    graph = import_graph()
    assert "onetok.models.vit" in graph["onetok.models.titok"]  # relative, module level
    assert "onetok.processes" in graph["onetok.sampling"]
    assert len(graph) > 50


def test_a_function_local_import_closes_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_models_import_nothing_above_them():
    allowed = ("onetok.models", "onetok.config", "onetok.errors", "onetok.files", "onetok.precision", "onetok.pretrained")
    graph = import_graph()
    upward = {name: sorted(t for t in targets if not t.startswith(allowed))
              for name, targets in graph.items() if name.startswith("onetok.models")}
    assert {name: targets for name, targets in upward.items() if targets} == {}


def test_every_error_class_is_defined_once():
    defined: dict[str, list[str]] = {}
    for path in PACKAGE_ROOT.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                defined.setdefault(node.name, []).append(module_name(path))
    assert {name: where for name, where in defined.items() if len(where) > 1} == {}
    errors_module = ast.parse((PACKAGE_ROOT / "errors.py").read_text())
    assert not [n for n in ast.walk(errors_module) if isinstance(n, (ast.Import, ast.ImportFrom))]

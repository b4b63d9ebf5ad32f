"""No import cycle inside server/logitls: a module's imports, read with `ast`, never lead back to it.

Every import counts, a lazy one inside a function included (a cycle through a lazy import is still
a design knot); imports under `if TYPE_CHECKING:` do not (they never run). An import of a package
counts as an import of its `__init__`; `from package import name` as an import of the submodule
where `name` is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "server"
PACKAGE = "logitls"


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for other in node.orelse:
                yield from _imports_in(other)
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The logitls modules that module `name` (at `path`) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from package import name`: the submodule where name is one, else the package itself
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        found.update(target for target in targets if target in modules and target != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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


def path_around(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import chain that goes round the cycle: start → … → start, inside the component."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & members):
                if other == start:
                    chain = [start]
                    while node != start:
                        chain.append(node)
                        node = parents[node]
                    return [start, *reversed(chain[1:]), start]
                if other not in parents:
                    parents[other] = node
                    following.append(other)
        frontier = following
    return component


def test_graph_sees_the_imports():
    graph = import_graph()
    assert "logitls.lsp.features" in graph["logitls.cli"]  # a lazy import inside a function counts
    assert "logitls.settings" in graph["logitls.lsp.server"]
    assert "logitls.lsp.server" not in graph["logitls.lsp.hover"]  # under `if TYPE_CHECKING:`: not counted


def test_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert path_around(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    graph = import_graph()
    found = list(cycles(graph))
    assert not found, "import cycles in server/logitls:\n" + "\n".join(
        " → ".join(path_around(graph, component)) + f"  ({len(component)} modules)" for component in found)


def test_features_never_import_each_other():
    """An LSP feature (a module of lsp/ with `register(server)`) takes what it needs from the server
    object and the shared modules; only lsp/features.py, which registers them, imports features."""
    modules = module_files()
    graph = import_graph()
    features = {name for name, path in modules.items() if name.startswith("logitls.lsp.")
                and any(isinstance(node, ast.FunctionDef) and node.name == "register"
                        for node in ast.parse(path.read_text()).body)}
    assert {"logitls.lsp.hover", "logitls.lsp.branch", "logitls.lsp.lifecycle"} <= features
    wrong = {name: sorted(graph[name] & features) for name in modules
             if name != "logitls.lsp.features" and graph[name] & features}
    assert not wrong, f"modules importing an LSP feature: {wrong}"

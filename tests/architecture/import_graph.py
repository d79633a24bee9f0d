"""The project's import graph, read from the source with `ast` (nothing is imported).

Each .py file of a package is a module named as Python names it (`model_api.codec` for
layers/serving/python/model_api/codec.py, `functions.inference.app` for a function's handler).
An edge `a -> b` says that running `a` imports `b`: module-level imports and imports inside
functions alike (both run sooner or later), but not the ones under `if TYPE_CHECKING:` (they
never run). `from pkg import name` is an edge to `pkg.name` when that is a module of the
project, else to `pkg` (its `__init__`). Imports of anything outside the project (the standard
library, numpy, boto3, ...) are kept per module in `Module.external`, not in the graph.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Where each top-level package's source lives: the folder that holds the package folder.
PACKAGE_HOMES: dict[str, Path] = {
    "model_api": ROOT / "layers" / "serving" / "python",
    "batch": ROOT,
    "local_api": ROOT,
    "model_registry": ROOT,
    "model_export": ROOT,
    "bench": ROOT,
}


@dataclass
class Module:
    """One source file: its dotted name, path, and what it imports (project modules in
    `imports`, the top-level names of everything else in `external`)."""

    name: str
    path: Path
    is_package: bool
    imports: set[str] = field(default_factory=set)
    external: set[str] = field(default_factory=set)

    @property
    def package(self) -> str:
        """The package it belongs to: the top-level one, or `functions.<name>` for a
        function's handler (each function deploys on its own)."""
        parts = self.name.split(".")
        return ".".join(parts[:2]) if parts[0] == "functions" else parts[0]


def source_files() -> dict[str, tuple[Path, bool]]:
    """Every module of the project: dotted name -> (path, is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package, home in PACKAGE_HOMES.items():
        for path in sorted((home / package).rglob("*.py")):
            parts = list(path.relative_to(home).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    for path in sorted((ROOT / "functions").glob("*/app.py")):
        found[f"functions.{path.parent.name}.app"] = (path, False)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, at any depth, outside `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _import_nodes(child)


def _import_nodes_of(node: ast.stmt) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    yield from _import_nodes(node)


def _imported_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom
                    ) -> Iterator[tuple[str, str | None]]:
    """(module named, name imported from it or None) for one import statement."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None
        return
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join([*anchor, *([base] if base else [])])
    for alias in node.names:
        yield base, alias.name


def build() -> dict[str, Module]:
    """The graph: every module of the project with the project modules it imports."""
    files = source_files()
    modules: dict[str, Module] = {}
    for name, (path, is_package) in files.items():
        module = Module(name, path, is_package)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _import_nodes(tree):
            for target, attribute in _imported_names(name, is_package, node):
                candidate = f"{target}.{attribute}" if attribute else None
                if candidate in files:
                    module.imports.add(candidate)
                elif target in files:
                    module.imports.add(target)
                elif target.split(".")[0] in PACKAGE_HOMES or target.startswith("functions."):
                    raise AssertionError(f"{path}: imports {target}, which is not in the tree")
                else:
                    module.external.add(target.split(".")[0])
        module.imports.discard(name)
        modules[name] = module
    return modules


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node (each sorted)."""
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
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def a_cycle(graph: dict[str, set[str]], component: Iterable[str], start: str | None = None
            ) -> list[str]:
    """One shortest cycle through `start` (default: the component's first node), as a path
    that ends where it starts: [a, b, c, a]."""
    members = set(component)
    start = start or min(members)
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for other in sorted(graph.get(node, ())):
            if other == start:
                return [*paths[node], start]
            if other in members and other not in paths:
                paths[other] = [*paths[node], other]
                queue.append(other)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def module_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The cycles among modules: for every strongly connected set of them, a shortest cycle
    through each member (each cycle once, starting at its first module)."""
    graph = {name: module.imports for name, module in modules.items()}
    cycles: list[list[str]] = []
    for component in strongly_connected(graph):
        for member in component:
            cycle = a_cycle(graph, component, member)[:-1]
            turn = cycle.index(min(cycle))
            cycle = [*cycle[turn:], *cycle[:turn], min(cycle)]
            if cycle not in cycles:
                cycles.append(cycle)
    return cycles


def package_graph(modules: dict[str, Module]) -> dict[str, dict[str, set[tuple[str, str]]]]:
    """package -> package it imports -> the (importer, imported) module pairs that make it."""
    graph: dict[str, dict[str, set[tuple[str, str]]]] = {}
    for module in modules.values():
        edges = graph.setdefault(module.package, {})
        for imported in module.imports:
            other = modules[imported].package
            if other != module.package:
                edges.setdefault(other, set()).add((module.name, imported))
    return graph


def package_cycles(modules: dict[str, Module]) -> list[str]:
    """One named cycle per strongly connected set of packages, each step with the module
    imports that make it: 'batch -> local_api (batch.local -> local_api.context) -> batch
    (...)'."""
    graph = package_graph(modules)
    simple = {package: set(edges) for package, edges in graph.items()}
    said = []
    for component in strongly_connected(simple):
        cycle = a_cycle(simple, component)
        steps = [cycle[0]]
        for here, there in pairwise(cycle):
            why = ", ".join(f"{a} -> {b}" for a, b in sorted(graph[here][there]))
            steps.append(f"{there} ({why})")
        said.append(" -> ".join(steps))
    return said

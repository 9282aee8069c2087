"""Fail when hand-written modules import each other in a cycle.

Every ``.py`` file under the given folders (default: the hand-written packages, without
``protocol/gen``) is parsed with ``ast``; each ``import`` and ``from ... import``, at any depth
(an import inside a function dodges the cycle at import time but is still a cycle in the
design), becomes an edge to the module of this repository it names. ``import a.b`` is an edge to
``a.b``; a package's ``__init__`` is a target only when the import names the package itself
(``from a import name`` where ``a/name.py`` does not exist). Strongly connected components of
more than one module (or a module importing itself) are reported as chains of imports.

Usage: ``check_import_cycles.py [--root DIR] [FOLDER ...]``; exit status 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import sys
from collections import deque
from collections.abc import Container, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_FOLDERS = (
    "protocol",
    "runtime",
    "migration",
    "devsupport",
    "controlplane",
    "agent",
    "cli",
    "client",
    "intake",
    "bench",
    "scripts",
)
EXCLUDED = ("protocol/gen",)


@dataclass(frozen=True)
class ImportEdge:
    """One import statement of ``source`` that names the repository module ``target``."""

    source: str
    target: str
    names: tuple[str, ...]
    path: Path
    line: int
    function: str | None  # the enclosing function, for an import that is not at module level


def find_modules(root: Path, folders: Sequence[str]) -> dict[str, Path]:
    """Map dotted module names to their files for every ``.py`` under ``folders``."""
    modules: dict[str, Path] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            relative = path.relative_to(root)
            if any(relative.is_relative_to(excluded) for excluded in EXCLUDED):
                continue
            parts = list(relative.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    """The package a relative import in ``module`` is resolved against."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(module: str, path: Path, level: int, name: str | None) -> str | None:
    base = _package_of(module, path).split(".") if module else []
    if level - 1 > len(base):
        return None  # goes above the repository root: not ours
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])]) or None


def _walk_with_function(
    node: ast.AST, function: str | None = None
) -> Iterator[tuple[ast.AST, str | None]]:
    for child in ast.iter_child_nodes(node):
        yield child, function
        inner = function
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            inner = child.name if function is None else f"{function}.{child.name}"
        yield from _walk_with_function(child, inner)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: Container[str]
) -> Iterator[tuple[str, str]]:
    """Yield (target module, imported name) for each repository module the import names."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in modules:
                name = name.rpartition(".")[0]  # `import a.b.attr`-style: the deepest module
            if name:
                yield name, alias.name
        return
    origin = node.module
    if node.level:
        origin = _resolve_relative(module, path, node.level, node.module)
    if origin is None:
        return
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        if submodule in modules:
            yield submodule, alias.name
        elif origin in modules:
            yield origin, alias.name


def collect_edges(modules: dict[str, Path]) -> list[ImportEdge]:
    """Every import between repository modules, grouped per (source, target, line)."""
    edges: list[ImportEdge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, function in _walk_with_function(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            grouped: dict[str, list[str]] = {}
            for target, name in _targets(node, module, path, modules):
                grouped.setdefault(target, []).append(name)
            for target, names in grouped.items():
                edges.append(ImportEdge(module, target, tuple(names), path, node.lineno, function))
    return edges


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components in no particular order, members sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            successor = next(successors, None)
            if successor is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
            elif successor not in index:
                index[successor] = low[successor] = len(index)
                stack.append(successor)
                on_stack.add(successor)
                work.append((successor, iter(sorted(graph[successor]))))
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
    return components


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> list[str]:
    """The shortest chain start -> ... -> start using only modules in ``within``."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for successor in sorted(graph[node] & within):
            if successor == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return [*reversed(chain), start]
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    return []


def find_cycles(edges: list[ImportEdge], modules: Sequence[str]) -> list[list[str]]:
    """Cycles as chains of modules (first == last), at least one through every cyclic module."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for edge in edges:
        graph[edge.source].add(edge.target)
    cycles: list[list[str]] = []
    for component in strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        covered: set[str] = set()
        for start in component:
            if start not in covered:
                cycle = shortest_cycle(graph, start, members)
                cycles.append(cycle)
                covered.update(cycle)
    return cycles


def describe_cycle(cycle: list[str], edges: list[ImportEdge], root: Path) -> list[str]:
    """Lines for one cycle: the chain, then each import that makes a link of it."""
    lines = ["import cycle: " + " -> ".join(cycle)]
    for source, target in itertools.pairwise(cycle):
        for edge in edges:
            if edge.source == source and edge.target == target:
                where = f" (inside {edge.function}())" if edge.function else ""
                lines.append(
                    f"  {edge.path.relative_to(root)}:{edge.line}: {source} imports "
                    f"{target}: {', '.join(edge.names)}{where}"
                )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("folders", nargs="*", default=list(DEFAULT_FOLDERS))
    args = parser.parse_args(argv)
    root = args.root.resolve()
    modules = find_modules(root, args.folders)
    edges = collect_edges(modules)
    cycles = find_cycles(edges, list(modules))
    for cycle in cycles:
        print("\n".join(describe_cycle(cycle, edges, root)))
    if cycles:
        print(f"check_import_cycles: {len(cycles)} import cycle(s) among {len(modules)} modules")
        return 1
    print(f"check_import_cycles: no import cycle among {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())

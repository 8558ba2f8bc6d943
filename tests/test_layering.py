"""The import graph has a direction: no cycle between packages, and none between modules.

Read from the source (``ast``), so the test sees deferred imports too; imports under ``if TYPE_CHECKING:`` are left
out (they never run). A package is a folder with an ``__init__.py``; the modules directly in ``server/`` are the
composition root (``app``, ``cli``, ``deps``) beside foundations every layer uses (``settings``, ``errors``), so each
of them counts on its own. A cycle names its edges and the modules behind them, so the failure says what to move.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("server", "classifiers", "guards", "loadtest")


def _modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def _imports(path: Path, top_level_only: bool) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)  # ``from pkg import module``


def _package(module: str, known: set[str]) -> str:
    parts = module.split(".")
    if parts[0] == "server" and len(parts) >= 2 and "server." + parts[1] in known \
            and not (ROOT / "server" / parts[1]).is_dir():
        return "server." + parts[1]
    for i in range(len(parts), 0, -1):
        candidate = ROOT.joinpath(*parts[:i])
        if candidate.is_dir() and (candidate / "__init__.py").exists():
            return ".".join(parts[:i])
    return parts[0]


def _graph(node_of: dict[str, str], top_level_only: bool) -> dict[str, dict[str, set[str]]]:
    """node -> node it imports -> the modules that import it."""
    edges: dict[str, dict[str, set[str]]] = {}
    for module, path in _modules():
        for name in _imports(path, top_level_only):
            # an import resolves to the longest known prefix: ``server.engines.base.Engine`` -> ``server.engines.base``
            candidates = [name.rsplit(".", k)[0] for k in range(name.count(".") + 1)]
            target = next((c for c in candidates if c in node_of), None)
            if target is None:
                continue
            src, dst = node_of[module], node_of[target]
            if src != dst:
                edges.setdefault(src, {}).setdefault(dst, set()).add(module)
    return edges


def _cycles(edges: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted({*edges, *(d for out in edges.values() for d in out)}):
        if v not in index:
            visit(v)
    return found


def _explain(edges: dict[str, dict[str, set[str]]], cycles: list[list[str]]) -> str:
    return "\n".join(f"{a} -> {b} (in {', '.join(sorted(edges[a][b]))})"
                     for cycle in cycles for a in cycle for b in cycle if b in edges.get(a, {}))


def test_no_import_cycle_between_packages() -> None:
    known = {module for module, _ in _modules()}
    edges = _graph({module: _package(module, known) for module in known}, top_level_only=False)
    cycles = _cycles(edges)
    assert not cycles, _explain(edges, cycles)


def test_no_import_cycle_between_modules_at_import_time() -> None:
    known = {module for module, _ in _modules()}
    edges = _graph({module: module for module in known}, top_level_only=True)
    cycles = _cycles(edges)
    assert not cycles, _explain(edges, cycles)


def test_the_check_sees_a_cycle() -> None:
    edges = {"a": {"b": {"a.x"}}, "b": {"c": {"b.y"}}, "c": {"a": {"c.z"}}, "d": {"a": {"d.w"}}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert "c -> a (in c.z)" in _explain(edges, _cycles(edges))

"""The structure of robert_server/api: no import cycle, and the service container knows no endpoint.

Every import counts, including those under ``if TYPE_CHECKING:``: a cycle hidden from the interpreter is
still one module knowing another's internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import robert_server.api

PACKAGE = "robert_server.api"
API_DIR = Path(robert_server.api.__file__).parent
ENDPOINTS = {"captcha", "clock", "register", "report", "status", "unregister", "internal"}


def api_imports() -> dict[str, set[str]]:
    """Module name (without the package) -> the modules of robert_server.api it imports."""
    modules = {p.stem for p in API_DIR.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        tree = ast.parse((API_DIR / f"{name}.py").read_text(), filename=f"{name}.py")
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == PACKAGE:  # from robert_server.api import status
                    found.update(a.name for a in node.names if a.name in modules)
                elif node.module.startswith(PACKAGE + "."):
                    found.add(node.module.removeprefix(PACKAGE + ".").split(".")[0])
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith(PACKAGE + "."):
                        found.add(a.name.removeprefix(PACKAGE + ".").split(".")[0])
        graph[name] = found - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_api_package() -> None:
    graph = api_imports()
    assert "services" in graph and "status" in graph  # the walk sees the package
    assert find_cycle(graph) is None


def test_the_service_container_imports_no_endpoint() -> None:
    assert api_imports()["services"] & ENDPOINTS == set()

"""The code's shape, as the developer guide asks: no import circle in app/flrepo, no function over 80
lines in app/ (the FL runtime, app/flrepo/fl, included: tests/fl/test_import_graph.py checks its layers
besides)."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"
PACKAGE = APP / "flrepo"
MAX_LINES = 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(APP).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The flrepo modules `name` imports, anywhere in it (function-level imports too: a circle is a
    circle even when it is postponed)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_in_the_package():
    sources = _sources()
    known = set(sources)
    graph = {name: _imports(name, path, known) for name, path in sources.items()}
    # A package's __init__ importing its own modules is how a package presents them, not a circle.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (sources[t].name == "__init__.py" and name.startswith(t + "."))}
    assert graph, "no modules found"
    assert _circles(graph) == []


def _long_functions(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_over_80_lines_in_app():
    long = []
    for path in sorted(APP.rglob("*.py")):
        long += _long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(APP)))
    assert long == []


def test_the_checks_find_what_they_look_for():
    """Each check fails on code that has what it forbids (an empty answer proves nothing otherwise)."""
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert _long_functions(f"def long():\n{body}\n", "m.py") == [f"m.py:1 long ({MAX_LINES + 1} lines)"]
    assert _long_functions(f"async def fits():\n{body[: body.rindex(chr(10))]}\n", "m.py") == []

"""How app/flrepo's modules import each other, read from their source (AST, nothing imported):
no import circle inside the packages in CIRCLE_FREE, the FL core imports neither Flower nor either
runtime, and the two runtimes do not import each other. A ServerApp process loads no legacy
runtime code (checked by importing the apps in a fresh interpreter)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
# Packages that must hold no import circle (among their own modules: a circle that passes through a
# module outside counts too). Add a package here once its circles are gone; the whole of flrepo last.
CIRCLE_FREE = ["flrepo.fl"]


def modules() -> dict[str, Path]:
    found = {}
    for path in (APP / "flrepo").rglob("*.py"):
        name = ".".join(path.relative_to(APP).with_suffix("").parts).removesuffix(".__init__")
        found[name] = path
    return found


def _targets(mods: dict[str, Path], current: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The flrepo modules an import statement names (a package's name stands for its __init__)."""
    package = current if mods[current].name == "__init__.py" else current.rsplit(".", 1)[0]
    if isinstance(node, ast.ImportFrom):
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]) if node.level else ""
        target = f"{base}.{node.module}" if base and node.module else (node.module or base)
        candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
    else:
        candidates = [alias.name for alias in node.names]
    for candidate in candidates:
        while candidate and candidate not in mods:
            candidate = candidate.rsplit(".", 1)[0] if "." in candidate else ""
        if candidate and candidate != current and candidate != "flrepo":
            yield candidate


def imports() -> dict[str, set[str]]:
    """Module -> the flrepo modules it imports (anywhere in it: at the top or inside a function)."""
    mods = modules()
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
        edges[name] = {t for n in nodes for t in _targets(mods, name, n)}
    return edges


def external_imports(module: str) -> set[str]:
    """The top-level names of what `module` imports from outside flrepo."""
    tree = ast.parse(modules()[module].read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names - {"flrepo"}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in edges.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_walk_finds_a_circle_when_there_is_one():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(edges) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("package", CIRCLE_FREE)
def test_no_import_circle_inside(package):
    found = [group for group in circles(imports()) if any(_inside(m, package) for m in group)]
    assert not found, f"import circles touching {package}: {found}"


def test_circles_elsewhere_are_listed():
    """Not a gate (see CIRCLE_FREE): shows, with -s, which circles are left outside it."""
    left = [group for group in circles(imports()) if not any(_inside(m, p) for p in CIRCLE_FREE for m in group)]
    print("\nimport circles outside", CIRCLE_FREE, ":", left or "none")
    assert all(len(group) > 1 for group in left)


def test_the_core_imports_neither_flower_nor_a_runtime():
    edges = imports()
    core = [m for m in edges if _inside(m, "flrepo.fl.core")]
    assert len(core) >= 9, core
    for module in core:
        assert "flwr" not in external_imports(module), f"{module} imports Flower"
        assert not {m for m in reachable(edges, module) if _inside(m, "flrepo.fl.legacy")}, module
        assert not {m for m in reachable(edges, module) if _inside(m, "flrepo.fl.message")}, module


@pytest.mark.parametrize(("runtime", "other"), [("legacy", "message"), ("message", "legacy")])
def test_the_runtimes_do_not_import_each_other(runtime, other):
    edges = imports()
    for module in [m for m in edges if _inside(m, f"flrepo.fl.{runtime}")]:
        crossed = {m for m in reachable(edges, module) if _inside(m, f"flrepo.fl.{other}")}
        assert not crossed, f"{module} reaches {sorted(crossed)}"
        assert not {"flrepo.fl.collector", "flrepo.fl.local_exec"} & reachable(edges, module), module


def test_a_serverapp_process_loads_no_legacy_runtime():
    """What flwr-serverapp and flwr-clientapp import for flrepo's apps: none of flrepo's legacy
    runtime and no Flower module beyond what Flower's Message API loads itself."""
    code = """
import sys
import flwr.app, flwr.clientapp, flwr.serverapp, flwr.serverapp.strategy
flower = {m for m in sys.modules if m.startswith("flwr")}
import flrepo.fl.message.apps, flrepo.fl.message.server, flrepo.fl.message.client
added = sorted(m for m in sys.modules if m.startswith("flwr") and m not in flower)
legacy = ("flrepo.fl.legacy", "flrepo.fl.collector", "flrepo.fl.local_exec")
ours = sorted(m for m in sys.modules if m.startswith(legacy))
print(repr((added, ours)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    added, ours = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert ours == [], ours
    legacy = [m for m in added if m.startswith(("flwr.compat", "flwr.server.superlink", "flwr.server.app"))]
    assert legacy == [], legacy

"""The tree's layering, checked on every import statement (function-level ones included):

- packages stack one way: ``fednas`` (the victim) at the bottom; ``defenses`` and ``attacker`` on it, apart from
  each other; ``app`` (the Flower composition root) on those; ``simulations`` (CLI, scenarios, benchmarks) on top;
- inside ``attacker`` the roles stack too: ``cache`` → ``wire`` → ``reconstruct`` → ``scoring`` → ``interceptor``,
  with ``membership`` standing apart on ``cache`` alone (its reference models are cached like the other models);
- no module imports itself through a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("app", "fednas", "attacker", "defenses", "simulations")
# what each layer may import (besides itself)
MAY_IMPORT = {
    "fednas": set(),
    "defenses": {"fednas"},
    "attacker.cache": {"fednas"},
    "attacker.wire": {"fednas", "attacker.cache"},
    "attacker.reconstruct": {"fednas", "attacker.cache", "attacker.wire"},
    "attacker.scoring": {"fednas", "attacker.cache", "attacker.wire", "attacker.reconstruct"},
    "attacker.interceptor": {"fednas", "attacker.cache", "attacker.wire", "attacker.reconstruct", "attacker.scoring"},
    "attacker.membership": {"fednas", "attacker.cache"},
    "app": {"fednas", "defenses", "attacker"},
    "simulations": {"fednas", "defenses", "attacker", "app"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in its body (``from m import x`` counts x when it is a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known)
    return {m for m in out if m in known and m.split(".")[0] in PACKAGES}


def layer(module: str) -> str:
    head = module.split(".")
    if head[0] == "attacker" and len(head) > 1:
        return f"attacker.{head[1]}"
    return head[0]


def graph() -> dict[str, set[str]]:
    found = modules()
    return {m: imports(p, set(found)) - {m} for m, p in found.items()}


def upward(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, deps in edges.items():
        own = layer(module)
        allowed = MAY_IMPORT.get(own, set()) | {own}
        wrong += [f"{module} -> {dep}" for dep in deps
                  if layer(dep) not in allowed and layer(dep).split(".")[0] not in allowed]
    return sorted(wrong)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:          # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_one_above_it():
    wrong = upward(graph())
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_no_import_circles():
    found = circles(graph())
    assert not found, f"import circles: {found}"


def test_the_checks_catch_an_upward_import_and_a_circle():
    edges = {"fednas.run": {"attacker.wire.tap"}, "attacker.wire.tap": {"attacker.interceptor.service"},
             "attacker.interceptor.service": {"attacker.wire.tap"}, "attacker.membership.amia": {"attacker.wire.tap"}}
    assert upward(edges) == ["attacker.membership.amia -> attacker.wire.tap",
                             "attacker.wire.tap -> attacker.interceptor.service", "fednas.run -> attacker.wire.tap"]
    assert circles(edges) == [["attacker.interceptor.service", "attacker.wire.tap"]]


def test_the_walker_sees_function_level_imports(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from fednas.seeds import generator\n    return generator\n")
    assert "fednas.seeds" in imports(source, set(modules()))

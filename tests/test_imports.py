"""relay/'s import graph, read with `ast` (every import: top level, inside functions, under
TYPE_CHECKING): no circles, and the front-ends and admin pages never reach back into relay.app."""

from __future__ import annotations

import ast
from pathlib import Path

RELAY = Path(__file__).resolve().parent.parent / "relay"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(RELAY.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def graph() -> dict[str, set[str]]:
    """Module -> the relay modules it imports (a `from pkg import name` counts `pkg.name` when
    that is a module, else `pkg`)."""
    modules = {module_name(p): p for p in RELAY.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]  # `import relay.x.y` -> the module that exists
                if target and target != name:
                    edges[name].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_lazy_and_type_checking_imports() -> None:
    edges = graph()
    assert "relay.app" in edges["relay.cli"]  # imported inside a function
    assert "relay.dispose" in edges["relay.web.server"]  # imported under TYPE_CHECKING
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_front_ends_and_admin_pages_do_not_import_the_wiring() -> None:
    edges = graph()
    offenders = sorted(m for m, targets in edges.items()
                       if m.startswith(("relay.frontends", "relay.web")) and "relay.app" in targets)
    assert offenders == []


def test_every_module_says_its_job() -> None:
    missing = sorted(module_name(p) for p in RELAY.rglob("*.py")
                     if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))))
    assert missing == []

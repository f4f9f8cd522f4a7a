"""The package's shape: data flows one way down the layers, no import cycle, no module over ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "faceembed"

#: Folder (or top-level module) -> layer; a module may import its own layer and the layers below it.
LAYERS = {"cli": 7, "demo": 6, "serve": 6, "api": 6, "bench": 5, "export": 5, "convert": 5, "training": 5, "batch": 4,
          "faces": 4, "engines": 4, "store": 3, "inference": 3, "evaluation": 3, "data": 2, "models": 2, "losses": 1,
          "report": 1, "fingerprint": 1, "files": 0, "errors": 0, "__init__": 8, "__main__": 8}
MAX_LINES = 400


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every faceembed module ``path`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    pkg = _module(path) if path.name == "__init__.py" else _module(path).rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("faceembed")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("faceembed"):
                out |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return out


MODULES = {_module(p) for p in PKG.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in files and i != m} for m, p in files.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else "__init__", 8)


def test_no_module_is_too_long():
    long = {str(p.relative_to(PKG)): n for p in PKG.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by responsibility: {long}"


def test_imports_only_go_down_the_layers():
    up = [f"{m} -> {i}" for m, deps in _graph().items() for i in deps if _layer(i) > _layer(m)]
    assert not up, "\n".join(up)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_bench_module_at_the_top():
    assert not list(PKG.glob("bench*.py"))

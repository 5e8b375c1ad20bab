"""The layout's rules (docs/architecture.md), checked on the source: imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"


def module_imports() -> dict[str, set[str]]:
    """qtinker module -> the qtinker modules its file imports anywhere (function-level imports included)."""
    files = {}
    for path in (APP / "qtinker").rglob("*.py"):
        if "bundled" in path.parts:  # the dataset's build script, not part of the package
            continue
        parts = path.relative_to(APP).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "qtinker":
                # `from qtinker.distill import losses` imports the module qtinker.distill.losses
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in files else node.module
                          for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.split(".")[0] == "qtinker"}
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_qtinker_modules():
    graph = module_imports()
    assert {"qtinker.cli", "qtinker.distill.recipe", "qtinker.quantize.recipe", "qtinker.core.paths"} <= set(graph)
    assert "qtinker.evaluate" in graph["qtinker.quantize.measure"]  # imported inside a function: it counts too
    assert cycles(graph) == []


def test_core_imports_only_core():
    outside = {m: sorted(t for t in targets if not t.startswith("qtinker.core"))
               for m, targets in module_imports().items() if m.startswith("qtinker.core")}
    assert {m: t for m, t in outside.items() if t} == {}


def test_only_the_ui_imports_gradio():
    importers = []
    for path in (APP / "qtinker").rglob("*.py"):
        if "ui" in path.relative_to(APP / "qtinker").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] in ("gradio", "gradio_client") for n in names):
                importers.append(str(path.relative_to(APP)))
    assert importers == []


def test_models_and_data_import_no_stage_above_them():
    """Every stage reads model folders through models/ and data through data/; they never reach up."""
    low = ("qtinker.core", "qtinker.models", "qtinker.data")
    above = {(m, t) for m, targets in module_imports().items() if m.startswith(low[1:])
             for t in targets if not t.startswith(low) and t != "qtinker"}
    assert above == set()

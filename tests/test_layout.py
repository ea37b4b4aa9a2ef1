"""The package's shape: no import circle, imports inside functions only to keep heavy libraries
out of light commands, and every `python -m` entry point and sandbox check module where the code
says it is. The layers themselves are import-linter's contract (pyproject.toml, lint-imports)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "selfdisco"
ROOT = PACKAGE.parent


def import_circles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return circles


def test_no_import_circle_counting_imports_inside_functions():
    graph = grimp.build_graph("selfdisco")  # every import statement, at any depth
    assert len(graph.modules) > 80
    assert import_circles(graph) == []


def test_the_circle_finder_finds_a_circle():
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.c", imported="pkg.a")
    assert import_circles(graph) == [["pkg.a", "pkg.b"]]


def lazy_imports_without_a_reason(source: str) -> list[int]:
    """Lines of imports inside functions with no `# lazy: ...` comment on them or heading their
    block of imports."""
    lines = source.splitlines()
    missing = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            i = node.lineno - 1
            explained = "# lazy" in lines[i]
            while not explained and i > 0 and re.match(r"\s*(import |from |# lazy|\)|\w)",
                                                       lines[i - 1]):
                i -= 1
                explained = lines[i].strip().startswith("# lazy")
                if not re.match(r"\s*(import |from |# lazy|\)|[\w, ]+,$)", lines[i]):
                    break
            if not explained:
                missing.append(node.lineno)
    return missing


def test_imports_inside_functions_say_why_they_are_there():
    found = {str(p.relative_to(ROOT)): lazy_imports_without_a_reason(p.read_text())
             for p in PACKAGE.rglob("*.py")}
    assert {path: lines for path, lines in found.items() if lines} == {}


def test_the_lazy_import_check_catches_an_unexplained_one():
    source = ("def f():\n    import json\n    return json\n\n\n"
              "def g():\n    # lazy: loads torch\n    import torch\n    import numpy\n\n\n"
              "def h():\n    import torch  # lazy: loads torch\n")
    assert lazy_imports_without_a_reason(source) == [2]


def entry_points() -> set[str]:
    """Modules the code starts with `python -m` (in argument lists and in shell scripts)."""
    pattern = re.compile(r"""(?:"-m",\s*|python3?\s+-m\s+|PY"\s+-m\s+)"?(selfdisco(?:\.\w+)+)""")
    found = set()
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.sh")]:
        found |= set(pattern.findall(path.read_text()))
    return found


def test_every_python_m_entry_point_is_a_module_with_a_main_guard():
    modules = entry_points()
    assert {"selfdisco.execution.worker", "selfdisco.losses.sandbox",
            "selfdisco.launch.background", "selfdisco.llm.models"} <= modules
    for name in modules:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"`python -m {name}` names no module"
        assert 'if __name__ == "__main__":' in Path(spec.origin).read_text(), name


def test_every_loss_kind_names_a_checks_module_with_run_checks():
    from selfdisco.losses.kinds import KINDS

    assert set(KINDS) == {"preference", "classification"}
    for kind in KINDS.values():
        assert callable(importlib.import_module(kind.checks_module).run_checks), kind.name


def test_every_sandbox_entry_point_resolves():
    from selfdisco.losses.sandbox import ENTRIES
    from selfdisco.tasks.digits.task import EVALUATION_ENTRIES

    for target in [*ENTRIES.values(), *EVALUATION_ENTRIES.values()]:
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target

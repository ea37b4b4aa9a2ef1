"""Statuses are referred to by name: selfdisco/rundir/events.py declares the candidate and
held-out statuses (and selfdisco/train/result.py a training run's outcome); nowhere else in the
package is a status word compared with a status, assigned to one, passed as one or written into
an SQL condition on one."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import selfdisco
from selfdisco.rundir import events

PACKAGE = Path(selfdisco.__file__).parent
DECLARING = (PACKAGE / "rundir" / "events.py", PACKAGE / "train" / "result.py")
WORDS = frozenset({*events.STATUSES, *events.HELDOUT_STATUSES})
SQL_STATUS = re.compile(r"\bstatus\s*(?:=|!=|<>|in\s*\()\s*'(\w+)'", re.IGNORECASE)


def _names_status(node: ast.AST) -> bool:
    """status, row.status, entry["status"], proposer_status: an expression holding a status."""
    if isinstance(node, ast.Name):
        return "status" in node.id
    if isinstance(node, ast.Attribute):
        return "status" in node.attr
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "status"
    return False


def _words(node: ast.AST | None) -> Iterator[str]:
    """The status words a value spells out: a literal, a tuple/list/set of them, or either
    branch of `a if c else b`."""
    if isinstance(node, ast.Constant) and node.value in WORDS:
        yield node.value
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        for element in node.elts:
            yield from _words(element)
    elif isinstance(node, ast.IfExp):
        yield from _words(node.body)
        yield from _words(node.orelse)


def _pairs(target: ast.AST, value: ast.AST) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs of an assignment, tuple unpacking taken apart."""
    if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
            and len(target.elts) == len(value.elts):
        for t, v in zip(target.elts, value.elts, strict=True):
            yield from _pairs(t, v)
    else:
        yield target, value


def status_literals(source: str) -> list[tuple[int, str, str]]:
    """(line, word, how) for each status word used as a status in Python `source`."""
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(_names_status, operands)):
                found += [(node.lineno, w, "compared") for o in operands for w in _words(o)]
        elif isinstance(node, ast.Call):
            found += [(node.lineno, w, f"passed as {k.arg}=") for k in node.keywords
                      if k.arg and "status" in k.arg for w in _words(k.value)]
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [(node.lineno, w, "assigned") for target in targets
                      for t, v in _pairs(target, node.value) if _names_status(t)
                      for w in _words(v)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = [*node.args.posonlyargs, *node.args.args]
            defaults = [(a, d) for a, d in zip(args[len(args) - len(node.args.defaults):],
                                               node.args.defaults, strict=True)]
            defaults += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults,
                                                strict=True) if d is not None]
            found += [(node.lineno, w, f"default of {a.arg}") for a, d in defaults
                      if "status" in a.arg for w in _words(d)]
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys
                    if isinstance(k, ast.Constant) and k.value in events.STATUSES]
            if len(keys) >= 2:  # a table keyed by status
                found += [(node.lineno, w, "a key of a status table") for w in keys]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, m.group(1), "in SQL")
                      for m in SQL_STATUS.finditer(node.value) if m.group(1) in WORDS]
    return sorted(found)


def test_the_package_names_every_status():
    found = [f"{path.relative_to(PACKAGE.parent)}:{line}: {word!r} {how}"
             for path in sorted(PACKAGE.rglob("*.py")) if path not in DECLARING
             for line, word, how in status_literals(path.read_text(encoding="utf-8"))]
    assert not found, ("use the status names of selfdisco/rundir/events.py:\n"
                       + "\n".join(found))


def test_the_stored_statuses_are_unchanged():
    """The names stand for the strings archives and event logs already hold."""
    assert events.STATUSES == ("proposed", "rejected", "training", "scoring", "scored",
                               "diverged", "failed")
    assert (events.PROPOSED, events.REJECTED, events.TRAINING, events.SCORING, events.SCORED,
            events.DIVERGED, events.FAILED) == events.STATUSES
    assert events.HELDOUT_STATUSES == (events.HELDOUT_DONE, events.HELDOUT_FAILED) == (
        "done", "failed")
    assert events.EVALUATION_FAILED == ("diverged", "failed")
    assert events.UNSCORED == ("rejected", "diverged", "failed")


def test_the_checker_finds_a_status_written_out():
    source = '''
if row.status == "scored" or "rejected" != other.status:
    pass
ok = [r for r in rows if r.status in ("diverged", "failed")]
archive.update(id, status="proposed")
emit("candidate_status", id=id, status="training" if code else "scoring")
row.status, row.reason = "failed", why
status: str = "proposed"
def record(point, status="done"): ...
STYLES = {"scored": "green", "failed": "red"}
rows = archive.rows("kind = 'proposal' AND status = 'scored'")
if entry["status"] == "done": ...
'''
    found = status_literals(source)
    assert [(line, word) for line, word, _ in found] == [
        (2, "rejected"), (2, "scored"), (4, "diverged"), (4, "failed"), (5, "proposed"),
        (6, "scoring"), (6, "training"), (7, "failed"), (8, "proposed"), (9, "done"),
        (10, "failed"), (10, "scored"), (11, "scored"), (12, "done")]


def test_the_checker_leaves_other_meanings_alone():
    source = '''
if row.status == SCORED and status in EVALUATED:
    pass
level = "error" if self.server_state in ("crashed", "failed") else "info"
with Progress("scoring", total=3):
    pass
pair = {"prompt": p, "chosen": c, "rejected": r}
decision, rule = "failed", "why"
if entry["decision"] == "failed" or cause == "diverged":
    pass
self.archive.set_generation(g, "done")
print("rejected at screening")
rows = archive.rows("status = ?", (SCORED,))
'''
    assert status_literals(source) == []

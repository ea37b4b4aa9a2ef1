"""Turn checked candidate code into a callable with its kind's loss convention."""

from __future__ import annotations

import ast
import builtins
import importlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

from selfdisco.losses import allowlist as allow
from selfdisco.losses.static import CheckedCode, CodeRejected, check_code

if TYPE_CHECKING:
    import torch

# fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
#    reference_rejected_logps, beta) -> per-example losses, shape (B,); their mean is the
# training loss. Candidate code and catalog losses compile to this.
LossFn = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor", float],
                  "torch.Tensor"]


class _LossContext:
    """Stands in for the trainer in the paper's method form: it only carries beta."""

    __slots__ = ("beta",)

    def __init__(self, beta: float) -> None:
        self.beta = beta


class CompiledLoss:
    """A candidate's function, called as fn(pc, pr, rc, rr, beta) in either written form."""

    def __init__(self, function: Callable[..., Any], checked: CheckedCode) -> None:
        self.function = function
        self.name = checked.function_name
        self.method_form = checked.method_form
        self.takes_beta = checked.takes_beta

    def __call__(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                 reference_rejected_logps, beta: float):
        args = [policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                reference_rejected_logps]
        if self.takes_beta:
            args.append(beta)
        if self.method_form:
            args.insert(0, _LossContext(beta))
        return self.function(*args)


@overload
def compile_loss(code: str, kind: Literal["preference"] = "preference") -> CompiledLoss: ...
@overload
def compile_loss(code: str, kind: str) -> Callable[..., Any]: ...
def compile_loss(code: str, kind: str = "preference") -> Callable[..., Any]:
    """Statically check `code`, then build its function (raises CodeRejected on refusal).

    Imports in the code are not run: the allowed modules are bound by the compiler, and
    annotations are dropped. The function sees only the builtins in allowlist.SAFE_BUILTINS.
    An exception raised by the code's top level (its module constants) propagates.

    Args:
        code: the candidate's code.
        kind: the kind of loss (kinds.KINDS). "preference" gives a CompiledLoss, called as
            fn(pc, pr, rc, rr, beta) in either written form; "classification" gives the
            function itself, fn(logits, targets).
    """
    checked = check_code(code, kind)
    tree = _Runnable().visit(checked.tree)
    ast.fix_missing_locations(tree)
    try:
        code_object = compile(tree, "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise CodeRejected(f"the code does not compile: {type(err).__name__}: {err}") from None
    namespace: dict[str, Any] = {"__builtins__": _safe_builtins(), "__name__": "candidate"}
    for name, module in checked.module_names.items():
        namespace[name] = importlib.import_module(module)
    for name, (module, attr) in checked.imported_values.items():
        namespace[name] = getattr(importlib.import_module(module), attr)
    exec(code_object, namespace)  # noqa: S102 - checked code only
    function = namespace[checked.function_name]
    return CompiledLoss(function, checked) if kind == "preference" else function


def _safe_builtins() -> dict[str, Any]:
    names = {name: getattr(builtins, name) for name in allow.SAFE_BUILTINS}
    # torch's C++ code imports its own modules lazily through the caller's builtins. Candidate
    # code can never name __import__ (underscore names are refused), and this one only hands
    # out modules that are already loaded or belong to torch.
    names["__import__"] = _import_loaded_or_torch
    return names


def _import_loaded_or_torch(name: str, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and (name in sys.modules or name.split(".")[0] == "torch"):
        return builtins.__import__(name, globals, locals, fromlist, level)
    raise ImportError(f"import of {name} is not allowed in a loss function")


class _Runnable(ast.NodeTransformer):
    """Drop imports (their names are bound by the compiler) and annotated assignments' types."""

    def visit_Import(self, node: ast.Import) -> ast.AST:
        return ast.copy_location(ast.Pass(), node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST:
        return ast.copy_location(ast.Pass(), node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return ast.copy_location(ast.Pass(), node)
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

"""Static check of candidate code: an allow-list walk over the syntax tree, before anything runs.

`check_code` accepts one function that uses only torch, torch.nn.functional, math, plain Python
arithmetic and control flow, and refuses everything else with a one-line reason for the LLM.
The walk is the same for every kind of loss (kinds.py); only the signature rule is the kind's.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from selfdisco.losses import allowlist as allow
from selfdisco.losses.kinds import LossKind, get_kind

ALLOWED_NODES = (
    # statements
    ast.Module, ast.FunctionDef, ast.Return, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For,
    ast.While, ast.If, ast.With, ast.Raise, ast.Try, ast.Assert, ast.Expr, ast.Pass, ast.Break,
    ast.Continue, ast.Import, ast.ImportFrom, ast.Delete,
    # expressions
    ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict, ast.Set, ast.ListComp,
    ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Compare, ast.Call, ast.Constant,
    ast.Attribute, ast.Subscript, ast.Starred, ast.Name, ast.List, ast.Tuple, ast.Slice,
    ast.JoinedStr, ast.FormattedValue, ast.NamedExpr,
    # parts
    ast.expr_context, ast.boolop, ast.operator, ast.unaryop, ast.cmpop, ast.arguments, ast.arg,
    ast.keyword, ast.comprehension, ast.alias, ast.excepthandler, ast.withitem,
)

REFUSED_NODES = {
    ast.ClassDef: "classes are not allowed; write one plain function",
    ast.AsyncFunctionDef: "async functions are not allowed; write one plain function",
    ast.Global: "'global' is not allowed; keep all state inside the function",
    ast.Nonlocal: "'nonlocal' is not allowed; keep all state inside the function",
    ast.Yield: "'yield' is not allowed; return a tensor of per-example losses",
    ast.YieldFrom: "'yield' is not allowed; return a tensor of per-example losses",
    ast.Await: "'await' is not allowed",
}

AVAILABLE = "only torch, F (torch.nn.functional), math and plain Python arithmetic are available"


class CodeRejected(Exception):
    """The code failed the static check; str(err) is a one-line reason meant for the LLM."""


@dataclass
class CheckedCode:
    """The result of a passed check: the tree to compile and how to call the function."""

    tree: ast.Module
    kind: str  # the kind of loss (kinds.KINDS) whose signature the function has
    function_name: str
    method_form: bool  # first parameter is `self`; beta comes from self.beta
    takes_beta: bool  # beta is passed as the fifth positional argument (preference only)
    module_names: dict[str, str] = field(default_factory=dict)  # name -> module path
    imported_values: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (mod, attr)


def check_code(code: str, kind: str = "preference") -> CheckedCode:
    """Check candidate code; raise CodeRejected with a one-line reason if anything is refused.

    Args:
        code: the candidate's code.
        kind: the kind of loss (kinds.KINDS); it decides the signature the function must have.
            An unknown kind raises ValueError.
    """
    loss_kind = get_kind(kind)
    if not isinstance(code, str) or not code.strip():
        raise CodeRejected("the code is empty; give one Python function as a string")
    if len(code) > allow.MAX_CODE_CHARS:
        raise CodeRejected(f"the code is {len(code)} characters long; keep it under "
                           f"{allow.MAX_CODE_CHARS}")
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise CodeRejected(f"syntax error on line {err.lineno}: {err.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise CodeRejected("the code could not be parsed (nested too deeply or invalid "
                           "characters)") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > allow.MAX_AST_NODES:
        raise CodeRejected(f"the code is too large ({count} syntax nodes, limit "
                           f"{allow.MAX_AST_NODES}); write a shorter function")
    try:
        return _Checker(tree, loss_kind).run()
    except RecursionError:
        raise CodeRejected("the code is nested too deeply; write a flatter function") from None


def _where(node: ast.AST) -> str:
    line = getattr(node, "lineno", None)
    return f"line {line}: " if line else ""


def _reject(node: ast.AST, message: str) -> CodeRejected:
    return CodeRejected(_where(node) + message)


class _Checker:
    def __init__(self, tree: ast.Module, kind: LossKind) -> None:
        self.tree = tree
        self.kind = kind
        self.modules: dict[str, str] = dict(allow.DEFAULT_MODULE_NAMES)
        self.imported_values: dict[str, tuple[str, str]] = {}
        self.annotation_names: set[str] = set()
        self.local_names: set[str] = set()
        self.self_name: str | None = None

    def run(self) -> CheckedCode:
        function = self._top_level()
        method_form, takes_beta = self._signature(function)
        self._collect_bindings()
        self._strip_annotations()
        for node in ast.walk(self.tree):
            self._check_node(node)
        self._visit_uses(self.tree)
        return CheckedCode(self.tree, self.kind.name, function.name, method_form, takes_beta,
                           dict(self.modules), dict(self.imported_values))

    # --- shape of the module -------------------------------------------------------------
    def _top_level(self) -> ast.FunctionDef:
        functions = []
        for stmt in self.tree.body:
            if isinstance(stmt, ast.FunctionDef):
                functions.append(stmt)
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring or a stray constant
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                continue  # a module-level constant
            elif type(stmt) in REFUSED_NODES:
                raise _reject(stmt, REFUSED_NODES[type(stmt)])
            else:
                raise _reject(stmt, "only imports, constants and one function definition may "
                                    "appear at the top level")
        if len(functions) != 1:
            found = ", ".join(f.name for f in functions) or "none"
            raise CodeRejected(f"the code must define exactly one top-level function taking "
                               f"{self.kind.signature}; found {len(functions)} ({found}). Put "
                               "helpers inside that function")
        return functions[0]

    def _signature(self, function: ast.FunctionDef) -> tuple[bool, bool]:
        """The kind's rule: it must accept the kind's arguments (names free); returns
        (method form, takes the optional arguments)."""
        kind, args = self.kind, function.args
        expected = f"it must take {kind.signature}: {kind.call}"
        if args.vararg or args.kwarg:
            raise _reject(function, f"list the arguments explicitly (no *args or **kwargs); "
                                    f"{expected}")
        if args.kwonlyargs and not kind.extra_defaults:
            raise _reject(function, f"keyword-only arguments are not allowed; {expected}")
        if any(default is None for default in args.kw_defaults):
            raise _reject(function, "keyword-only arguments need default values")
        params = [a.arg for a in args.posonlyargs + args.args]
        method_form = bool(params) and params[0] == "self"
        if method_form and not kind.method_form:
            raise _reject(function, f"the method form (self, ...) is not accepted for a "
                                    f"{kind.name} loss; {expected}")
        if method_form:
            self.self_name = "self"
            params = params[1:]
        fewest = len(kind.parameters) - (len(kind.optional) if method_form else 0)
        required = len(params) - len(args.defaults)
        too_many = len(params) > len(kind.parameters) and not kind.extra_defaults
        if len(params) < fewest or required > len(kind.parameters) or too_many:
            hint = " (set constants inside the function)" if too_many else ""
            raise _reject(function, f"the function takes {len(params)} arguments; {expected}"
                                    f"{hint}")
        return method_form, bool(kind.optional) and len(params) >= len(kind.parameters)

    def _collect_bindings(self) -> None:
        """Record every name the code binds, and the modules its imports name."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self._bind_import(node, alias.name, alias.asname)
            elif isinstance(node, ast.ImportFrom):
                self._bind_from_import(node)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                self.local_names.add(node.id)
            elif isinstance(node, ast.arg):
                self.local_names.add(node.arg)
            elif isinstance(node, ast.FunctionDef):
                self.local_names.add(node.name)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                self.local_names.add(node.name)
        clash = self.local_names & (set(self.modules) | set(self.imported_values))
        if clash:
            name = sorted(clash)[0]
            raise CodeRejected(f"'{name}' names a module or imported function; do not assign "
                               "to it, pick another variable name")

    def _bind_import(self, node: ast.AST, module: str, asname: str | None) -> None:
        root = module.split(".")[0]
        if root in allow.ANNOTATION_MODULES:
            self.annotation_names.add(asname or root)
            return
        if module not in allow.MODULES:
            raise _reject(node, f"import of '{module}' is not allowed; {AVAILABLE} (e.g. "
                                "'import torch', 'import torch.nn.functional as F', "
                                "'import math')")
        if asname:
            self.modules[asname] = module
        else:
            self.modules[root] = root

    def _bind_from_import(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or module.split(".")[0] in allow.ANNOTATION_MODULES:
            if node.level:
                raise _reject(node, "relative imports are not allowed")
            self.annotation_names.update(a.asname or a.name for a in node.names)
            return
        if module not in allow.MODULES:
            raise _reject(node, f"import from '{module}' is not allowed; {AVAILABLE}")
        for alias in node.names:
            target = f"{module}.{alias.name}"
            if target in allow.MODULES:
                self.modules[alias.asname or alias.name] = target
            elif alias.name in allow.MODULES[module]:
                self.imported_values[alias.asname or alias.name] = (module, alias.name)
            else:
                raise _reject(node, f"{target} is not available; {AVAILABLE}")

    def _strip_annotations(self) -> None:
        """Drop type annotations: they are never run, so they need no check."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.arg):
                node.annotation = None
            elif isinstance(node, (ast.FunctionDef, ast.Lambda)) and hasattr(node, "returns"):
                node.returns = None
            elif isinstance(node, ast.AnnAssign):
                node.annotation = ast.Constant(value=None)

    # --- node-by-node rules --------------------------------------------------------------
    def _check_node(self, node: ast.AST) -> None:
        if type(node) in REFUSED_NODES:
            raise _reject(node, REFUSED_NODES[type(node)])
        if not isinstance(node, ALLOWED_NODES):
            raise _reject(node, f"'{type(node).__name__}' syntax is not allowed; use plain "
                                "arithmetic, if/for/while and function calls")
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            raise _reject(node, "decorators are not allowed")
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)):
            raise _reject(node, "assigning to attributes is not allowed; use local variables")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise _reject(node, f"attribute '{node.attr}' is not allowed (names starting with "
                                "an underscore are off limits)")
        name = _bound_name(node)
        if name and name.startswith("_") and name != "_":
            raise _reject(node, f"the name '{name}' is not allowed (names starting with an "
                                "underscore are off limits)")
        if isinstance(node, ast.Call):
            self._check_range(node)

    def _check_range(self, node: ast.Call) -> None:
        if not (isinstance(node.func, ast.Name) and node.func.id == "range"):
            return
        bounds = [_constant_int(arg) for arg in node.args]
        if not bounds or any(b is None for b in bounds):
            return
        if len(bounds) > 3 or 0 in bounds[2:]:
            return
        start, stop, step = (0, bounds[0], 1) if len(bounds) == 1 else (*bounds, 1)[:3]
        length = max(0, (stop - start + step - (1 if step > 0 else -1)) // step)
        if length > allow.MAX_RANGE:
            raise _reject(node, f"range of {length} steps is too long; loops may run at most "
                                f"{allow.MAX_RANGE} times")

    def _visit_uses(self, node: ast.AST) -> None:
        """Check every name read and every attribute chain against the allow-lists."""
        if isinstance(node, ast.Attribute):
            module = self._module_path(node)
            if module is not None:  # a chain ending in a module, not followed by a function
                raise _reject(node, f"the module '{module}' may only be used as "
                                    f"{module}.<function>")
            self._check_attribute(node)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            self._check_name(node)
            return
        for child in ast.iter_child_nodes(node):
            self._visit_uses(child)

    def _module_path(self, node: ast.expr) -> str | None:
        """The module an expression names (torch, torch.nn, F, ...), or None for a value."""
        if isinstance(node, ast.Name) and node.id in self.modules:
            return self.modules[node.id]
        if isinstance(node, ast.Attribute):
            base = self._module_path(node.value)
            if base is not None and f"{base}.{node.attr}" in allow.MODULES:
                return f"{base}.{node.attr}"
        return None

    def _check_attribute(self, node: ast.Attribute) -> None:
        base_module = self._module_path(node.value)
        if base_module is not None:
            if node.attr not in allow.MODULES[base_module]:
                raise _reject(node, f"{base_module}.{node.attr} is not available; {AVAILABLE} "
                                    "(pure math functions only: no files, processes, "
                                    "randomness or global settings)")
            return  # the whole chain down to a module is allowed
        if isinstance(node.value, ast.Name) and node.value.id == self.self_name:
            if node.attr not in self.kind.optional:
                raise _reject(node, f"self.{node.attr} is not available; only "
                                    f"{self._self_attrs()} is")
            return
        self._visit_uses(node.value)  # inner parts first: report the first problem in a chain
        if node.attr not in allow.VALUE_ATTRS:
            raise _reject(node, f"attribute '.{node.attr}' is not allowed; use torch "
                                "functions and common tensor methods such as .mean(), "
                                ".clamp(), .exp()")

    def _self_attrs(self) -> str:
        return " or ".join(f"self.{name}" for name in self.kind.optional)

    def _check_name(self, node: ast.Name) -> None:
        name = node.id
        if name in self.modules:
            raise _reject(node, f"the module '{name}' may only be used as {name}.<function>")
        if name == self.self_name:
            raise _reject(node, f"self may only be used as {self._self_attrs()}")
        if name in self.local_names or name in self.imported_values:
            return
        if name in allow.SAFE_BUILTINS:
            return
        if name in allow.DANGEROUS_BUILTINS:
            raise _reject(node, f"'{name}' is not allowed: the loss may not open files, run "
                                f"code from strings or inspect objects; {AVAILABLE}")
        if name in self.annotation_names:
            raise _reject(node, f"'{name}' may only appear in type annotations")
        raise _reject(node, f"name '{name}' is not defined; {AVAILABLE}, with the function's "
                            "arguments and local variables")


def _bound_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.FunctionDef):
        return node.name
    if isinstance(node, ast.ExceptHandler):
        return node.name
    if isinstance(node, ast.alias):
        return None if node.name == "__future__" else (node.asname or None)
    return None


def _constant_int(node: ast.expr, depth: int = 0) -> int | None:
    """Evaluate a small constant integer expression (e.g. 10**9); None when it is not one."""
    if depth > 10:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = _constant_int(node.operand, depth + 1)
        return None if value is None else -value
    if isinstance(node, ast.BinOp):
        left = _constant_int(node.left, depth + 1)
        right = _constant_int(node.right, depth + 1)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Pow):
            return left**right if abs(left) <= 10**6 and 0 <= right <= 64 else 10**18
        if isinstance(node.op, ast.Mult) and abs(left) < 10**18 and abs(right) < 10**18:
            return left * right
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
    return None

"""Static check and compiler: what candidate code may use, and the forms it may take."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F

from selfdisco.losses import CodeRejected, catalog, check_code, compile_loss
from selfdisco.losses import allowlist as allow

SIG = ("(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
       "reference_rejected_logps, beta)")
RHO = ("    rho = (policy_chosen_logps - reference_chosen_logps) - "
       "(policy_rejected_logps - reference_rejected_logps)\n")


def dpo_values(loss_fn, beta: float = 0.1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(6, generator=generator) * 5 - 40 for _ in range(4)]
    return loss_fn(*inputs, beta), inputs


def expected_dpo(inputs, beta: float = 0.1) -> torch.Tensor:
    pc, pr, rc, rr = inputs
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))


def test_every_catalog_entry_passes_the_static_check():
    for name in catalog.names():
        checked = check_code(catalog.get(name).candidate.code)
        assert checked.function_name == name


@pytest.mark.parametrize("module, names", [
    (torch, allow.TORCH), (F, allow.FUNCTIONAL), (torch.special, allow.SPECIAL),
    (importlib.import_module("math"), allow.MATH),
])
def test_every_allowed_name_exists(module, names):
    missing = sorted(name for name in names if not hasattr(module, name))
    assert missing == []


def test_every_value_attribute_is_a_tensor_attribute_or_a_plain_one():
    plain = {"eps", "tiny", "append", "items", "keys", "values"}  # finfo, list, dict
    assert sorted(a for a in allow.VALUE_ATTRS - plain if not hasattr(torch.Tensor, a)) == []


def test_allow_list_holds_no_file_process_or_random_function():
    refused = {"load", "save", "from_file", "hub", "ops", "utils", "library", "classes", "jit",
               "compile", "backends", "cuda", "distributed", "multiprocessing", "rand",
               "randn", "randint", "bernoulli", "manual_seed", "set_num_threads", "empty",
               "Tensor", "Storage", "set_default_dtype", "set_grad_enabled", "package"}
    assert refused & allow.TORCH == set()
    assert {"dropout", "alpha_dropout", "gumbel_softmax", "rrelu"} & allow.FUNCTIONAL == set()
    assert {"untyped_storage", "storage", "numpy", "share_memory_", "apply_", "format",
            "grad_fn", "register_hook", "uniform_", "normal_"} & allow.VALUE_ATTRS == set()
    assert not any(name.startswith("_") for name in allow.VALUE_ATTRS | allow.SAFE_BUILTINS)


@pytest.mark.parametrize("code", [
    # the project's plain form
    f"def loss{SIG}:\n{RHO}    return -F.logsigmoid(beta * rho)\n",
    # the paper's method form, reading self.beta
    ("def loss(self, policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,\n"
     "         reference_rejected_logps):\n"
     f"{RHO}    return -F.logsigmoid(self.beta * rho)\n"),
    # method form that also takes beta, with typing imports and annotations
    ("from typing import Tuple\nimport torch\n"
     "def loss(self, pc: torch.FloatTensor, pr, rc, rr, beta: float) -> Tuple[int]:\n"
     "    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))\n"),
    # other import spellings, module constants, helpers inside, a docstring, an extra default
    ("import torch.nn.functional as nnf\nfrom torch.nn import functional\n"
     "from math import log\nSCALE = 1.0\n"
     "def my_loss(pc, pr, rc, rr, beta, tau=0.05):\n"
     "    '''A docstring.'''\n"
     "    def margin(x):\n        return SCALE * x + 0 * log(1.0)\n"
     "    total = 0.0\n    for _ in range(3):\n        total += 1.0\n"
     "    out = functional.softplus(-beta * margin((pc - rc) - (pr - rr)))\n"
     "    return nnf.relu(out) * total / 3.0\n"),
    # comprehension, conditional expression, torch.special, lists, no_grad block
    ("def loss(pc, pr, rc, rr, beta):\n"
     "    parts = [pc - rc, pr - rr]\n"
     "    with torch.no_grad():\n        unused = torch.special.expit(parts[0])\n"
     "    rho = parts[0] - parts[1] if beta > 0 else sum(p for p in parts)\n"
     "    return -torch.special.log_ndtr(torch.zeros_like(rho)) * 0 - F.logsigmoid(beta * rho)\n"),
])
def test_accepted_forms_compute_the_loss(code):
    loss_fn = compile_loss(code)
    values, inputs = dpo_values(loss_fn)
    assert torch.allclose(values, expected_dpo(inputs), atol=1e-6)


@pytest.mark.parametrize("code, reason", [
    ("def loss(pc, pr, rc, rr):\n    return pc - pr\n", "it must take"),
    ("def loss(*args):\n    return args[0]\n", "no *args"),
    ("def loss(pc, pr, rc, rr, beta):\n    torch = 1\n    return pc\n", "do not assign"),
    ("from typing import List\ndef loss(pc, pr, rc, rr, beta):\n    x = List\n    return pc\n",
     "may only appear in type annotations"),
    ("def loss(pc, pr, rc, rr, beta):\n    f = torch.nn.functional\n    return f.relu(pc)\n",
     "may only be used as torch.nn.functional.<function>"),
    ("def loss(pc, pr, rc, rr, beta):\n    return (lambda: 0).__code__\n", "'__code__'"),
    ("def loss(pc, pr, rc, rr, beta):\n    return [x for x in range(1_000_000)]\n",
     "loops may run at most"),
    ("async def loss(pc, pr, rc, rr, beta):\n    return pc\n", "async functions"),
    ("def loss(pc, pr, rc, rr, beta):\n    yield pc\n", "'yield' is not allowed"),
    ("def loss(pc, pr, rc, rr, beta):\n    nonlocal x\n", "'nonlocal' is not allowed"),
    ("def loss(pc, pr, rc, rr, beta):\n    del pc.grad\n    return pr\n", "assigning to attr"),
    ("if True:\n    pass\ndef loss(pc, pr, rc, rr, beta):\n    return pc\n", "top level"),
    ("def loss(pc, pr, rc, rr, beta):\n    return torch.tensor(1).type('torch.DoubleTensor')\n",
     "'.type' is not allowed"),
    ("from __future__ import braces\n", "exactly one top-level function"),
    ("", "empty"),
    ("def loss(pc, pr, rc, rr, beta):\n    return " + "-" * 1000 + "pc\n", "nested too deeply"),
    ("def loss(pc, pr, rc, rr, beta):\n    return " + "(" * 300 + "pc" + ")" * 300 + "\n",
     "syntax error"),
])
def test_refused_code_gets_a_reason(code, reason):
    with pytest.raises(CodeRejected) as err:
        compile_loss(code)
    message = str(err.value)
    assert reason in message
    assert "\n" not in message


def test_compiled_code_sees_only_safe_builtins():
    loss_fn = compile_loss(catalog.get("dpo").candidate.code)
    builtins = loss_fn.function.__globals__["__builtins__"]
    assert {"open", "eval", "exec", "getattr", "print"} & set(builtins) == set()
    assert "smtplib" not in sys.modules
    with pytest.raises(ImportError):
        builtins["__import__"]("smtplib")
    assert builtins["__import__"]("torch") is torch


def test_underscore_alone_is_a_fine_variable_name():
    code = f"def loss{SIG}:\n{RHO}    _ = 1\n    return -F.logsigmoid(beta * rho) * _\n"
    values, inputs = dpo_values(compile_loss(code))
    assert torch.allclose(values, expected_dpo(inputs), atol=1e-6)

"""Loss kinds: one checker for every kind, with the signature rule of each."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from selfdisco.losses import CodeRejected, CompiledLoss, check_code, compile_loss
from selfdisco.losses.kinds import KINDS, get_kind

CE_BODY = "    return F.cross_entropy(logits, targets, reduction='none')\n"
DPO_BODY = "    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr)))\n"
METHOD_BODY = "    return -F.logsigmoid(self.beta * ((pc - rc) - (pr - rr)))\n"


@pytest.mark.parametrize("code, kind, refusal", [
    # classification: exactly two positional parameters, names free
    ("def f(logits, targets):\n" + CE_BODY, "classification", None),
    ("def f(scores, labels):\n    return F.cross_entropy(scores, labels, reduction='none')\n",
     "classification", None),
    ("def f(logits, targets):\n" + CE_BODY, "preference",
     "it must take (policy_chosen_logps, policy_rejected_logps"),
    ("def f(logits, targets, gamma=2.0):\n" + CE_BODY, "classification",
     "set constants inside the function"),
    ("def f(logits, targets, *, gamma=2.0):\n" + CE_BODY, "classification",
     "keyword-only arguments are not allowed"),
    ("def f(logits):\n    return logits.sum(dim=1)\n", "classification",
     "takes 1 arguments; it must take (logits, targets)"),
    ("def f(self, logits, targets):\n" + CE_BODY, "classification", "method form"),
    ("def f(*args):\n    return args[0]\n", "classification", "no *args"),
    # preference: the four log-probs and beta, or the method form reading self.beta
    ("def f(pc, pr, rc, rr, beta):\n" + DPO_BODY, "preference", None),
    ("def f(self, pc, pr, rc, rr):\n" + METHOD_BODY, "preference", None),
    ("def f(pc, pr, rc, rr, beta, tau=0.1):\n" + DPO_BODY, "preference", None),
    ("def f(pc, pr, rc, rr, beta):\n" + DPO_BODY, "classification",
     "takes 5 arguments; it must take (logits, targets)"),
    ("def f(self, pc, pr, rc, rr):\n" + METHOD_BODY, "classification", "method form"),
])
def test_signature_rules_are_the_kinds(code, kind, refusal):
    if refusal is None:
        assert check_code(code, kind).kind == kind
        return
    with pytest.raises(CodeRejected) as err:
        check_code(code, kind)
    assert refusal in str(err.value)


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    code = "def f(logits, targets):\n" + CE_BODY
    for call in (check_code, compile_loss):
        with pytest.raises(ValueError) as err:
            call(code, "regression")
        assert str(err.value) == ("unknown loss kind 'regression'; the kinds are preference, "
                                  "classification")
    assert get_kind("classification") is KINDS["classification"]


def test_every_kind_goes_through_the_same_allow_list():
    body = "    torch.save(logits, 'x.pt')\n" + CE_BODY
    for kind, signature in (("classification", "(logits, targets)"),
                            ("preference", "(logits, targets, b, c, beta)")):
        with pytest.raises(CodeRejected, match="torch.save is not available"):
            check_code(f"def f{signature}:\n{body}", kind)


def test_compile_loss_gives_each_kind_its_callable():
    classification = compile_loss("def f(logits, targets):\n" + CE_BODY, kind="classification")
    logits, targets = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    assert torch.equal(classification(logits, targets),
                       F.cross_entropy(logits, targets, reduction="none"))
    assert "open" not in classification.__globals__["__builtins__"]
    assert isinstance(compile_loss("def f(pc, pr, rc, rr, beta):\n" + DPO_BODY), CompiledLoss)

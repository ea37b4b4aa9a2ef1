"""digits: the classification-loss task on scikit-learn's bundled digits."""

from __future__ import annotations

import pytest

from selfdisco.errors import UserError
from selfdisco.tasks import EvaluationError, TaskContext, get_task

# The 30 s budget is a guard against slow candidates; tests lift it so a busy machine cannot
# fail them (scripts/bench_digits.py reports the time).
RELAXED = {"max_seconds": 600.0}

IGNORES_TARGETS = '''
def ignores_targets(logits, targets):
    return (logits ** 2).mean(dim=1)
'''


@pytest.fixture(scope="module")
def digits():
    return get_task("digits")


def test_cross_entropy_clearly_beats_a_loss_that_ignores_the_targets(digits):
    ctx = TaskContext(options=RELAXED)
    good = digits.score(ctx)
    poor = digits.evaluate_loss(ctx, IGNORES_TARGETS)
    assert good.n == poor.n == 270  # the validation split (splits.py)
    assert good.value > 0.9
    assert poor.value < 0.3
    assert good.value - poor.value > 10 * (good.stderr + poor.stderr)


def test_same_seed_same_accuracy_and_a_callable_loss_works(digits):
    import torch.nn.functional as F

    ctx = TaskContext(options={"epochs": 3, **RELAXED})
    first = digits.evaluate_loss(
        ctx, lambda logits, y: F.cross_entropy(logits, y, reduction="none"))
    second = digits.score(ctx)
    assert first.value == second.value
    assert first.metrics["steps"] == second.metrics["steps"] == 3 * 20


@pytest.mark.parametrize("code, reason", [
    ("def f(logits, targets):\n    return logits.sum(dim=1)[:3]", "shape"),
    ("def f(logits, targets):\n    return logits.sum(dim=1) * float('nan')", "diverged"),
    ("def f(logits, targets):\n    return logits.sum(dim=1).detach()", "gradient"),
    ("def f(logits, targets):\n    return targets.float()", "gradient"),
    ("def f(logits, targets):\n    return undefined_name(logits)", "'undefined_name' is not"),
    ("import os\ndef f(logits, targets):\n    return logits.sum(1)", "import"),
    ("def f(logits, targets):\n    return logits.__class__", "not allowed"),
    ("def f(logits, targets):\n    return logits.sum(1)\ndef g(a, b):\n    return a",
     "exactly one"),
    ("def f(logits, targets:\n    return 1", "syntax"),
])
def test_broken_losses_fail_with_a_reason(digits, code, reason):
    with pytest.raises(EvaluationError, match=reason):
        digits.evaluate_loss(TaskContext(options={"epochs": 1, **RELAXED}), code)


def test_digits_has_no_adapters_and_checks_its_options(digits):
    with pytest.raises(UserError, match="not adapters"):
        digits.score(TaskContext(), adapter_path="some/adapter")
    with pytest.raises(UserError, match="unknown task option"):
        digits.score(TaskContext(options={"epochz": 3}))
    with pytest.raises(UserError, match="expected a int"):
        digits.score(TaskContext(options={"epochs": "many"}))

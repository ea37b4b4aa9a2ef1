"""Digits evaluations confined: a child per candidate, past the static check nothing escapes.

The static check is bypassed (confine_helpers.unchecked_env) so that what is tested is the
process boundary and the operating system's confinement.
"""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from confine_helpers import (
    Target,
    hostile_code_trying_all,
    require_confinement,
    unchecked_env,
)

from selfdisco.execution.classification import ClassificationEvaluator
from selfdisco.tasks.digits.screening import CATALOG

CROSS_ENTROPY = CATALOG["cross_entropy"][1]
# Its own module level replaces F.cross_entropy with a loss that teaches nothing.
PATCHER = '''
F.cross_entropy = lambda logits, targets, **kwargs: 0 * logits.sum(dim=1)

def patcher(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")
'''
OPTIONS = {"epochs": 2}


def scores(evaluator, codes: list[str]) -> list:
    done = []
    rows = [SimpleNamespace(id=f"c{i}", code=code) for i, code in enumerate(codes)]
    evaluator.evaluate(rows, on_progress=lambda row, p: None,
                       on_done=lambda row, result: done.append(result))
    return done


@pytest.fixture
def unchecked(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", unchecked_env(tmp_path / "bypass")["PYTHONPATH"])


def test_a_monkeypatching_candidate_does_not_change_the_next_score(unchecked):
    alone = ClassificationEvaluator(OPTIONS, train_seed=3)
    after = ClassificationEvaluator(OPTIONS, train_seed=3)
    try:
        [reference] = scores(alone, [CROSS_ENTROPY])
        patched, following = scores(after, [PATCHER, CROSS_ENTROPY])
    finally:
        alone.close()
        after.close()
    assert reference.status == "scored" and reference.fitness > 0.5
    # The patch held inside its own evaluation (a loss that teaches nothing, near chance) ...
    assert patched.status == "scored" and patched.fitness < 0.3, patched
    # ... and died with it.
    assert following.fitness == reference.fitness
    assert following.metrics["final_train_loss"] == reference.metrics["final_train_loss"]


def test_eval_loss_confines_a_candidate_past_the_static_check(tmp_path, unchecked):
    require_confinement()
    target = Target(tmp_path)
    loss = tmp_path / "hostile.py"
    loss.write_text(hostile_code_trying_all(target.tried(), kind="classification"))
    try:
        done = subprocess.run([sys.executable, "-m", "selfdisco", "eval", "--task", "digits",
                               "--loss", str(loss), "--option", "epochs=1"],
                              capture_output=True, text=True, timeout=300)
    finally:
        target.close()
    assert done.returncode == 1, done.stderr[-2000:]
    target.assert_all_refused(done.stderr)

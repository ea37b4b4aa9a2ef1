"""Discovery on the digits task: classification losses screened (shapes, gradients, label
leakage), baselines burnt in, candidates trained and scored by held-out accuracy, through the
real loop with a scripted proposer (no model server)."""

from __future__ import annotations

import pytest
from loop_helpers import ScriptedProposer, digits_answer, digits_config, make_digits_loop

from selfdisco import stats
from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.launch.checks import check_run
from selfdisco.losses import Candidate, confine
from selfdisco.rundir.archive import REFERENCE_SHAPE, Archive
from selfdisco.rundir.events import read_events
from selfdisco.tasks.digits import screening

SMOOTH_FOCAL = '''
def smooth_focal(logits, targets):
    logp = F.log_softmax(logits, dim=1)
    true = logp.gather(1, targets[:, None]).squeeze(1)
    return -(1 - true.exp()) * true - 0.05 * logp.mean(dim=1)
'''
TEMPERED = '''
def tempered(logits, targets):
    return F.cross_entropy(logits / 2.0, targets, reduction="none")
'''
LEAKS = '''
def leaks(logits, targets):
    peeked = logits + 20.0 * F.one_hot(targets, logits.shape[1])
    return F.cross_entropy(peeked, targets, reduction="none")
'''
REVERSED = '''
def reversed_ce(logits, targets):
    return -F.cross_entropy(logits, targets, reduction="none")
'''


def screen(code: str):
    return screening.screen(Candidate(thought="", name="x", code=code), timeout_s=10)


def test_the_baselines_pass_screening_with_their_shapes():
    for name in screening.CATALOG:
        result = screen(screening.catalog_entry(name)["code"])
        assert result.ok, (name, result.reason)
        losses = [x for x in result.shape.loss if x is not None]
        assert losses[0] > losses[-1]  # lower when the true class's margin is larger


@pytest.mark.parametrize("code, says", [
    (LEAKS, "reads the labels"),
    (REVERSED, "rank predictions"),
    ("def f(logits, targets):\n    return (logits ** 2).mean(dim=1)\n", "labels"),
    ("def f(logits, targets):\n    logits.mul_(2.0)\n    return logits.sum(dim=1)\n", "place"),
    ("def f(logits, targets):\n    p = torch.exp(logits)\n"
     "    return -torch.log(p.gather(1, targets[:, None]).squeeze(1) / p.sum(dim=1))\n",
     "large logits"),
    ("def f(logits, targets):\n    return logits[:, :3]\n", "shape"),
    ("import os\ndef f(logits, targets):\n    return logits\n", "import of 'os'"),
])
def test_screening_rejects_leaks_and_broken_losses_with_a_reason(code, says):
    result = screen(code)
    assert not result.ok and says in result.reason


def test_a_scalar_mean_is_the_same_behaviour_as_per_example_cross_entropy():
    scalar = screen("def ce(logits, targets):\n    return F.cross_entropy(logits, targets)\n")
    per_example = screen(screening.catalog_entry("cross_entropy")["code"])
    assert scalar.fingerprint.is_duplicate(per_example.fingerprint)
    assert not screen(TEMPERED).fingerprint.is_duplicate(per_example.fingerprint)


def test_a_digits_run_is_checked_with_one_message_naming_every_flag():
    with pytest.raises(UserError) as err:
        check_run(load_config("cpu", overrides={"task": {"name": "digits"},
                                                 "discovery": {"self_improve": "policy"}}))
    message = str(err.value)
    for flag in ("discovery.burn_in=", "discovery.code_grammar=free",
                 "discovery.self_improve=off"):
        assert flag in message
    assert check_run(digits_config()) is None  # no training recipe: nothing is fine-tuned


def test_digits_discovery_burns_in_screens_and_scores_by_accuracy(tmp_path, digits_evaluator):
    run = tmp_path / "run"
    proposer = ScriptedProposer([digits_answer("smooth_focal", SMOOTH_FOCAL),
                                 digits_answer("leaks", LEAKS),
                                 digits_answer("tempered", TEMPERED)])
    loop = make_digits_loop(run, proposer, digits_evaluator)
    assert loop.run() == "generation limit reached"
    archive = Archive(run)
    rows = {r.id: r for r in archive.rows()}
    assert all(rows[i].status == "scored" for i in ("burn-cross_entropy", "burn-focal"))
    assert rows["g01-c1"].status == "scored" and 0.5 < rows["g01-c1"].fitness <= 1
    assert rows["g01-c2"].status == "rejected" and "reads the labels" in rows["g01-c2"].reason
    assert rows["g01-c2-r1"].status == "scored"
    assert rows["base"].fitness < 0.3  # the untrained network
    confined = confine.status().confined  # evaluated in a confined child wherever it can be
    assert all(rows[i].metrics["confined"] is confined
               for i in ("burn-cross_entropy", "burn-focal", "g01-c1", "base"))
    assert archive.get_meta(REFERENCE_SHAPE)["beta"] == 0.0  # cross-entropy's margin curve
    system = proposer.requests[0]["messages"][0]["content"]
    assert "def loss_fn(logits, targets):" in system and "cross_entropy" in \
        proposer.requests[0]["messages"][1]["content"]
    d = stats.difference(rows["g01-c1"], rows["burn-cross_entropy"])
    assert d.paired and d.n_prompts == 270  # the same validation images (splits.py)
    assert list(read_events(run / "events.jsonl"))[-1]["type"] == "run_finished"

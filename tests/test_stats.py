"""The statistics of selfdisco/stats.py on hand-computed examples: the mean and its standard
error with their edge rules, the correlation, the seed variance (a candidate's own and pooled),
paired differences and the tie rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from selfdisco import stats


@dataclass
class Row:
    id: str
    fitness: float | None
    stderr: float | None = None
    code: str | None = "def loss_fn(...)"
    metrics: dict = field(default_factory=dict)


def test_mean_and_stderr():
    assert stats.mean_stderr([1.0, 2.0, 3.0, 4.0]) == pytest.approx(
        (2.5, math.sqrt((1.5**2 + 0.5**2) * 2 / 3 / 4)))
    assert stats.mean([1.0, 2.0, 3.0, 4.0]) == 2.5


def test_the_edge_rules_of_the_mean_and_its_standard_error():
    mean, stderr = stats.mean_stderr([])  # nothing measured: no mean, no error
    assert math.isnan(mean) and stderr is None
    assert math.isnan(stats.mean([]))
    assert stats.mean_stderr([2.0]) == (2.0, None)  # one value: no error
    assert stats.mean_stderr([0.3, 0.3, 0.3]) == (pytest.approx(0.3), 0.0)  # no spread: 0
    assert stats.mean_stderr((1, 3)) == (2.0, 1.0)  # any sequence of numbers


def test_the_binomial_standard_error():
    assert stats.proportion_stderr(0.5, 4) == 0.25
    assert stats.proportion_stderr(1.0, 8) == 0.0


def test_paired_difference_by_hand():
    # d = (0.1, 0.2, 0.0, 0.1): mean 0.1, sd sqrt(0.02 / 3), s.e. sd / 2
    a = Row("a", 0.6, metrics={"per_prompt": [0.5, 0.7, 0.9, 0.3]})
    b = Row("b", 0.5, metrics={"per_prompt": [0.4, 0.5, 0.9, 0.2]})
    d = stats.difference(a, b)
    assert d.paired
    assert d.mean == pytest.approx(0.1)
    assert d.stderr == pytest.approx(math.sqrt(0.02 / 3) / 2)
    # Two seeds each and a pooled seed variance of 0.0004 add 0.0004 / 2 per side.
    for row in (a, b):
        row.metrics["replicates"] = [{"fitness": 0.0, "stderr": 0.1}] * 2
    d = stats.difference(a, b, pooled=0.0004)
    assert d.stderr == pytest.approx(math.sqrt(0.02 / 3 / 4 + 0.0004))
    # The untrained base policy has no training seed: only the trained side's share.
    b.code = None
    assert stats.difference(a, b, pooled=0.0004).stderr == pytest.approx(
        math.sqrt(0.02 / 3 / 4 + 0.0002))


def test_unpaired_difference_without_per_prompt_scores():
    d = stats.difference(Row("a", 0.6, 0.03), Row("b", 0.5, 0.04))
    assert not d.paired
    assert (d.mean, d.stderr) == pytest.approx((0.1, 0.05))
    assert stats.difference(Row("a", None), Row("b", 0.5)) is None


def test_seed_variance_own_and_pooled():
    # var(1.0, 1.4) = 0.08 less the sampling 0.1^2 = 0.07; var(2.0, 2.2) = 0.02 < 0.2^2: 0.
    first, second = [(1.0, 0.1), (1.4, 0.1)], [(2.0, 0.2), (2.2, 0.2)]
    assert stats.seed_component(first) == pytest.approx(0.07)
    assert stats.seed_component(second) == 0.0
    pooled = stats.pooled_seed_variance([first, second, [(3.0, 0.1)]])
    assert pooled == pytest.approx(0.035)
    assert stats.replicate_stderr(first, pooled) == pytest.approx(math.sqrt((0.035 + 0.01) / 2))
    assert stats.pooled_seed_variance([[(1.0, 0.1)]]) is None
    assert stats.replicate_stderr([(1.0, 0.1)], None) == pytest.approx(0.1)  # R = 1: as before
    five = [(f, 0.5) for f in (1.0, 2.0, 3.0, 4.0, 5.0)]  # enough seeds: its own spread
    assert stats.replicate_stderr(five, pooled) == pytest.approx(math.sqrt(2.5 / 5))
    assert "pooled" in stats.seed_variance_source(2, pooled)
    assert "not measured" in stats.seed_variance_source(1, None)


def test_tie_rule():
    assert stats.Difference(-0.05, 0.03, paired=True).tied  # within 2 s.e.
    assert not stats.Difference(-0.07, 0.03, paired=True).tied
    assert not stats.Difference(-0.01, None, paired=False).tied
    prompts = {"best": [0.9, 0.8, 0.7, 0.6], "close": [0.9, 0.7, 0.7, 0.6],
               "far": [0.1, 0.2, 0.1, 0.2], stats.REFERENCE_ID: [0.5, 0.5, 0.4, 0.4]}
    rows = [Row(id, sum(p) / 4, metrics={"per_prompt": p}) for id, p in prompts.items()]
    rows.append(Row("failed", None))
    comparison = stats.compare(rows)
    assert comparison.best.id == "best"
    assert comparison.tied == {"best", "close"}
    assert comparison.to_reference["best"].mean == pytest.approx(0.3)
    assert stats.REFERENCE_ID not in comparison.to_reference
    assert stats.compare([Row("failed", None)]) is None


def test_correlation():
    assert stats.correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert stats.correlation([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert stats.correlation([3.0, 2.0, 1.0], [1.0, 2.0, 4.0]) == pytest.approx(-0.9819805)


def test_the_edge_rules_of_the_correlation():
    assert stats.correlation([], []) is None
    assert stats.correlation([1.0, 2.0], [1.0, 2.0]) is None  # two points always lie on a line
    assert stats.correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant side
    assert stats.correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]) is None
    with pytest.raises(ValueError):
        stats.correlation([1.0, 2.0, 3.0], [1.0, 2.0])


def test_the_tie_rule_is_one_constant():
    from selfdisco.discovery.proposer import duel

    assert f"within {stats.TIE_SE:g} standard errors" in stats.TIE_RULE
    assert f"more than {stats.TIE_SE:g} standard errors" in duel.RULE
    assert duel.worse(-0.5, 0.2) and not duel.worse(-0.5, 0.25)  # beyond TIE_SE s.e. or not
    assert duel.rate_word(0.5, 0.2) == "higher" and duel.rate_word(0.5, 0.25) == "within noise"

"""Raw and length-controlled pairwise win rates (AlpacaEval 2's length control).

Each judged order of a pair is one comparison, scored 1 (the policy wins), 0.5 (tie) or 0.
The raw win rate is their mean with a standard error over prompts; the length-controlled win
rate is the rate a logistic regression of the outcome on the standardised length difference
predicts at zero difference, with a seeded bootstrap over prompts for its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from selfdisco import stats
from selfdisco.tasks.judge import PairGame, pairwise_statistics

# Bootstrap resamples for the length-controlled rate's standard error; 200 puts the s.e.'s own
# sampling error near 5%.
BOOTSTRAP_RESAMPLES = 200
# L2 penalty on the length slope (not the intercept): keeps the fit finite when the longer
# answer always wins (separable outcomes), and is small beside the log-likelihood of ~100
# comparisons.
SLOPE_PENALTY = 1.0


@dataclass(frozen=True)
class Comparison:
    """One judged order: the policy's score (1 win, 0.5 tie, 0 loss) and how many characters
    longer its answer was than the reference's."""

    prompt: int
    score: float
    length_diff: int


def comparisons(games: list[PairGame]) -> list[Comparison]:
    """Every parsed verdict of every game as one comparison (first: policy shown as A)."""
    as_a = {"A": 1.0, "tie": 0.5, "B": 0.0}
    as_b = {"A": 0.0, "tie": 0.5, "B": 1.0}
    out = []
    for index, game in enumerate(games):
        diff = game.policy_chars - game.baseline_chars
        for verdict, scores in ((game.first, as_a), (game.second, as_b)):
            if verdict is not None:
                out.append(Comparison(index, scores[verdict], diff))
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, penalty: float = SLOPE_PENALTY,
                 steps: int = 50) -> tuple[float, float]:
    """(intercept, slope) of P(y) = sigmoid(a + b x) by Newton's method; y may be fractional
    (a tie is half a win), and `penalty` is an L2 penalty on b alone."""
    design = np.column_stack([np.ones_like(x), x])
    ridge = np.diag([0.0, penalty])
    theta = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (y - p) - ridge @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge + 1e-9 * np.eye(2)
        delta = np.linalg.solve(hessian, gradient)
        theta = theta + delta
        if np.max(np.abs(delta)) < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def length_controlled(comps: list[Comparison], *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = 0) -> dict[str, float]:
    """The win rate predicted at zero length difference, its bootstrap standard error (prompts
    resampled with replacement, seeded) and the fitted slope per standard deviation of the
    length difference."""
    if not comps:
        return {"lc_win_rate": math.nan, "lc_win_rate_stderr": math.nan, "length_slope": math.nan}
    diffs = np.array([c.length_diff for c in comps], dtype=float)
    scale = float(np.sqrt(np.mean(diffs ** 2)))  # about zero, not the mean: zero is the target
    x = diffs / scale if scale > 0 else np.zeros_like(diffs)
    y = np.array([c.score for c in comps])
    intercept, slope = fit_logistic(x, y)
    by_prompt: dict[int, list[int]] = {}
    for row, comp in enumerate(comps):
        by_prompt.setdefault(comp.prompt, []).append(row)
    groups = list(by_prompt.values())
    rng = np.random.default_rng(seed)
    rates = []
    for _ in range(resamples if len(groups) > 1 else 0):
        rows = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
        rates.append(_sigmoid(fit_logistic(x[rows], y[rows])[0]))
    stderr = float(np.std(rates, ddof=1)) if len(rates) > 1 else math.nan
    return {"lc_win_rate": _sigmoid(intercept), "lc_win_rate_stderr": stderr,
            "length_slope": slope}


def _sigmoid(value: float) -> float:
    return float(1.0 / (1.0 + math.exp(-value)))


def win_rate(comps: list[Comparison]) -> tuple[float, float | None]:
    """Mean score over comparisons, and its standard error over prompts (each prompt's mean of
    its judged orders is one observation; stats.mean_stderr's edge rules: NaN and None for no
    comparisons, None for one prompt)."""
    by_prompt: dict[int, list[float]] = {}
    for comp in comps:
        by_prompt.setdefault(comp.prompt, []).append(comp.score)
    means = [stats.mean(s) for s in by_prompt.values()]
    return stats.mean([c.score for c in comps]), stats.mean_stderr(means)[1]


def summarise(games: list[PairGame], seed: int = 0) -> dict[str, Any]:
    """Raw and length-controlled win rates with the judge's bias statistics."""
    comps = comparisons(games)
    rate, stderr = win_rate(comps)
    judged = pairwise_statistics(games)
    return {"win_rate": rate, "win_rate_stderr": stderr, **length_controlled(comps, seed=seed),
            "comparisons": len(comps), "prompts": len(games),
            "parse_rate": len(comps) / (2 * len(games)) if games else 0.0,
            **{k: judged[k] for k in ("consistency", "first_position_rate", "longer_wins_rate",
                                      "policy_mean_chars", "baseline_mean_chars")}}

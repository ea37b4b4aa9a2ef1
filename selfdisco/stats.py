"""Statistics for comparing candidates (PAPER.md section 8): standard errors that include the
variance between training seeds, paired differences on the shared held-out prompts, and the
rule that calls a candidate indistinguishable from the best. Also the one mean, standard error
and correlation that every task, report and rule uses, with one set of edge rules.

The functions read rows duck-typed (an archive Row or the TUI's CandidateRow): `fitness`,
`stderr`, `code` and `metrics`, where metrics["per_prompt"] holds each held-out prompt's
contribution to the fitness in prompt order (their mean is the fitness) and
metrics["replicates"] one {"fitness", "stderr", ...} entry per training seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

REFERENCE_ID = "burn-dpo"  # the baseline every candidate is compared with
# A difference within this many standard errors is not told apart from zero: a candidate this
# close to the best is tied with it, and the duel, the proposer's preference pairs, the
# multi-fidelity cut and the held-out frontier's dominance count only a difference past it.
TIE_SE = 2.0
# With fewer replicates than this, a candidate's own seed variance is too rough: pool it.
POOL_BELOW = 5
TIE_RULE = (f"tied with the best: the paired difference to the best is within {TIE_SE:g} "
            "standard errors (not corrected for multiple comparisons)")


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; NaN for no values (nothing was measured)."""
    return sum(values) / len(values) if values else math.nan


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and its standard error, sample sd / sqrt(n).

    The edge rules, one for every caller: the mean of no values is NaN; below two values there
    is no standard error (None), as there is none for a row without one; equal values have a
    standard error of 0.
    """
    if len(values) < 2:
        return mean(values), None
    return mean(values), math.sqrt(variance(values) / len(values))


def variance(values: Sequence[float]) -> float:
    """The sample variance (n - 1 in the denominator)."""
    mean_value = mean(values)
    return sum((v - mean_value) ** 2 for v in values) / (len(values) - 1)


def proportion_stderr(p: float, n: int) -> float:
    """The binomial standard error sqrt(p (1 - p) / n) of a share p of n."""
    return math.sqrt(p * (1 - p) / n)


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r (scipy.stats.pearsonr); None below 3 pairs (two points always lie on a line)
    or when either side is constant. ValueError when the sides differ in length."""
    if len(xs) != len(ys):
        raise ValueError(f"a correlation of {len(xs)} values with {len(ys)}")
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    # lazy: scipy.stats takes about a second to import, and the TUI imports this module
    from scipy.stats import pearsonr

    return float(pearsonr(xs, ys).statistic)


# ---- training seeds ---------------------------------------------------------------------

Replicates = list[tuple[float, float | None]]  # (fitness, sampling stderr) per training seed


def seed_component(replicates: Replicates) -> float:
    """One candidate's between-seed variance: the variance of its per-seed fitnesses less
    their mean squared sampling error (which that variance also contains); at least 0."""
    sampling = sum((e or 0.0) ** 2 for _, e in replicates) / len(replicates)
    return max(0.0, variance([f for f, _ in replicates]) - sampling)


def pooled_seed_variance(groups: Iterable[Replicates]) -> float | None:
    """The between-seed variance pooled over candidates (weights: replicates - 1), assuming
    similar seed noise for all; None when no candidate has two replicates."""
    total = weight = 0.0
    for replicates in groups:
        if len(replicates) >= 2:
            total += (len(replicates) - 1) * seed_component(replicates)
            weight += len(replicates) - 1
    return total / weight if weight else None


def replicate_stderr(replicates: Replicates, pooled: float | None) -> float | None:
    """The standard error of the mean over replicates, seed variance included: from the
    candidate's own seeds when it has POOL_BELOW or more, else the pooled seed variance plus
    the replicates' sampling errors. A single replicate without a pool keeps its own error."""
    r = len(replicates)
    if r >= POOL_BELOW:
        return math.sqrt(variance([f for f, _ in replicates]) / r)
    if any(e is None for _, e in replicates):
        return None
    sampling = sum(e ** 2 for _, e in replicates) / r
    return math.sqrt(((pooled or 0.0) + sampling) / r)


def seed_variance_source(replicates: int, pooled: float | None) -> str:
    """Which estimate of the seed variance the standard errors use, in words."""
    if replicates >= POOL_BELOW:
        return f"each candidate's own {replicates} training seeds"
    if pooled is None:
        return "none: one training seed per candidate, so training variance is not measured"
    return (f"pooled across the run's candidates ({replicates} seeds each; estimated seed "
            f"variance {pooled:.3g})")


# ---- rows -------------------------------------------------------------------------------

def replicates_of(row: Any) -> Replicates:
    """The row's per-seed (fitness, stderr) pairs (empty when none were recorded)."""
    entries = (row.metrics or {}).get("replicates") or []
    return [(float(e["fitness"]), e.get("stderr")) for e in entries
            if isinstance(e, dict) and isinstance(e.get("fitness"), int | float)]


def per_prompt(row: Any) -> list[float] | None:
    values = (row.metrics or {}).get("per_prompt")
    if isinstance(values, list) and values and all(isinstance(v, int | float) for v in values):
        return [float(v) for v in values]
    return None


def run_seed_variance(rows: Iterable[Any]) -> float | None:
    """The seed variance pooled over the rows that were trained with two or more seeds."""
    return pooled_seed_variance(replicates_of(r) for r in rows if r.fitness is not None)


def row_stderr(row: Any, pooled: float | None) -> float | None:
    """The row's standard error with the run's current pooled seed variance."""
    replicates = replicates_of(row)
    if len(replicates) >= 2:
        return replicate_stderr(replicates, pooled)
    return row.stderr


@dataclass(frozen=True)
class Difference:
    """A's fitness minus B's, with its standard error; paired when both were scored on the
    same prompts (then stderr = sd of per-prompt differences / sqrt(n), plus seed variance)."""

    mean: float
    stderr: float | None
    paired: bool

    @property
    def tied(self) -> bool:
        """Not distinguishable from zero under the tie rule."""
        return self.stderr is not None and abs(self.mean) <= TIE_SE * self.stderr


def _seed_share(row: Any, pooled: float | None) -> float:
    """The seed variance in the row's mean: none for the untrained policy."""
    if pooled is None or not row.code:
        return 0.0
    return pooled / max(1, len(replicates_of(row)))


def difference(a: Any, b: Any, pooled: float | None = None) -> Difference | None:
    """a minus b: paired over prompts when both have per-prompt scores of the same length,
    else the difference of fitnesses with independent errors. None without both fitnesses."""
    if a.fitness is None or b.fitness is None:
        return None
    pa, pb = per_prompt(a), per_prompt(b)
    if pa and pb and len(pa) == len(pb) and len(pa) >= 2:
        diff, stderr = mean_stderr([x - y for x, y in zip(pa, pb, strict=True)])
        seeds = _seed_share(a, pooled) + _seed_share(b, pooled)
        return Difference(diff, math.sqrt((stderr or 0.0) ** 2 + seeds), paired=True)
    ea, eb = row_stderr(a, pooled), row_stderr(b, pooled)
    stderr = math.sqrt(ea ** 2 + eb ** 2) if ea is not None and eb is not None else None
    return Difference(a.fitness - b.fitness, stderr, paired=False)


@dataclass(frozen=True)
class Comparison:
    """Every scored row against the best and against dpo (REFERENCE_ID)."""

    best: Any
    to_best: dict[str, Difference | None]
    to_reference: dict[str, Difference | None]
    tied: set[str]  # ids tied with the best, the best included
    pooled: float | None


def compare(rows: Iterable[Any]) -> Comparison | None:
    """The tie rule and the differences to dpo for the scored rows; None when none is."""
    scored = [r for r in rows if r.fitness is not None]
    if not scored:
        return None
    pooled = run_seed_variance(scored)
    best = max(scored, key=lambda r: r.fitness)
    reference = next((r for r in scored if r.id == REFERENCE_ID), None)
    to_best = {r.id: difference(r, best, pooled) for r in scored if r is not best}
    to_reference = {r.id: difference(r, reference, pooled) for r in scored
                    if reference is not None and r is not reference}
    tied = {best.id} | {id for id, d in to_best.items() if d is not None and d.tied}
    return Comparison(best, to_best, to_reference, tied, pooled)

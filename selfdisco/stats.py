"""Statistics for comparing candidates (PAPER.md section 8), and the one mean, standard error
and correlation that every task, report and rule uses, with one set of edge rules.

Two losses are compared seed by seed: replicate k trains every loss of a run with the same
seed and scores it on the same prompts with the same sampling seed, so their difference is
blocked by training seed and paired by prompt (seed_blocked_difference, a two-way seed x prompt
standard error); with one seed per candidate the loss-by-seed interaction is pooled from the
losses trained on several shared seeds (the burn-in baselines, discovery.baseline_seeds). Every
"better than dpo" and every "tied with the best" is decided at a family-wise level of
FAMILY_ALPHA over the run's comparisons (Holm), one-sided; a comparison whose standard error
leaves out a source of noise (the training noise, or the prompts') makes no claim.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

REFERENCE_ID = "burn-dpo"  # the baseline every candidate is compared with
FAMILY_ALPHA = 0.05  # the family-wise error level of every "better" and "tied" claim
# Rules that decide without claiming (the multi-fidelity cut, the proposer's preference pairs)
# count a difference only past this many standard errors.
TIE_SE = 2.0
# With fewer seeds than this, a loss's own seed spread is too rough: pool it.
POOL_BELOW = 5
TIE_RULE = ("tied with the best: not below it at a family-wise level of "
            f"{FAMILY_ALPHA:g} (Holm over the run's comparisons with the best, one-sided, "
            "blocked by training seed and paired by prompt)")
BETTER_RULE = (f"better than dpo at a family-wise level of {FAMILY_ALPHA:g} (Holm over every "
               "scored loss compared with dpo, one-sided, blocked by training seed and paired "
               "by prompt)")


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


# ---- training seeds as blocks -------------------------------------------------------------
# Replicate k trains every loss with the same seed and scores it on the same prompts with the
# same sampling seed, so a difference of two losses is read seed by seed and prompt by prompt:
# D[k, j] = Y_a[k, j] - Y_b[k, j] = delta + i_k + g_j + e_kj, with i_k the loss-by-seed
# interaction, g_j the loss-by-prompt effect and e_kj the rest. A seed effect common to both
# losses is not in D at all. Var(mean D) = s_i / K + s_g / J + s_e / (K J).

@dataclass(frozen=True)
class PooledInteraction:
    """The loss-by-seed interaction pooled across a run: the variance of one seed's difference
    of two losses' fitnesses about its mean, with its degrees of freedom."""

    variance: float
    df: int


@dataclass(frozen=True)
class BlockedDifference:
    """A minus B over the seeds both were trained on, blocked by seed and paired by prompt.

    components: each part's share of stderr**2, summing to it: "seed" (the loss-by-seed
    interaction, s_i / K), "prompt" (the loss-by-prompt effect, s_g / J) and, from per-seed
    per-prompt scores only, "residual" (s_e / (K J)); without those the other two each contain
    it. omitted names the parts the inputs could not estimate, which stderr leaves out.
    """

    mean: float
    stderr: float | None
    n_seeds: int
    n_prompts: int | None
    df: float | None  # Satterthwaite's; None where the normal distribution is used
    components: dict[str, float]
    basis: str
    omitted: tuple[str, ...] = ()
    paired: bool = True  # False: no shared seed, the rows' own errors combined

    def p_value(self) -> float | None:
        """One-sided p-value of "A is no better than B" (t with df, normal when df is None)."""
        if self.stderr is None:
            return None
        if self.stderr == 0:
            return 0.0 if self.mean > 0 else 1.0
        from scipy import stats as scipy_stats  # lazy: see correlation

        t = self.mean / self.stderr
        return float(scipy_stats.norm.sf(t) if self.df is None else scipy_stats.t.sf(t, self.df))

    def interval(self, level: float = 0.95) -> tuple[float, float] | None:
        """The two-sided interval mean +- q * stderr, q the t (or normal) quantile."""
        if self.stderr is None:
            return None
        from scipy import stats as scipy_stats  # lazy: see correlation

        upper = (1 + level) / 2
        q = scipy_stats.norm.ppf(upper) if self.df is None else scipy_stats.t.ppf(upper, self.df)
        return self.mean - q * self.stderr, self.mean + q * self.stderr


def seed_blocked_difference(
        a: Sequence, b: Sequence, interaction: PooledInteraction | None = None,
        prompt_means: tuple[Sequence[float], Sequence[float]] | None = None,
) -> BlockedDifference:
    """A minus B, blocked by training seed, with a two-way (seed x prompt) standard error.

    Args:
        a, b: per seed (rows, the same seeds in the same order) the two losses' per-prompt
            scores on the same prompts, K x J; or only their per-seed fitnesses, K values.
        interaction: the run's pooled loss-by-seed interaction (pooled_interaction); it replaces
            the pair's own seed component below POOL_BELOW seeds and is the only one at K = 1.
        prompt_means: with per-seed fitnesses only, the two losses' per-prompt scores averaged
            over the seeds (what a row records), for the loss-by-prompt part.

    Returns:
        With K x J scores: Var = (MS_seed + MS_prompt - MS_resid) / (K J), each of the seed and
        prompt parts clipped so that its variance component is at least 0 (MS_seed and
        MS_prompt raised to MS_resid), df by Satterthwaite. Without cell-level scores MS_resid
        is unknown and not subtracted (conservative by s_e / (K J)); a part with no data is
        left out and named in `omitted` and `basis`.
    """
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_values.shape != b_values.shape or a_values.ndim not in (1, 2) or not a_values.size:
        raise ValueError(f"per-seed scores of shapes {a_values.shape} and {b_values.shape}")
    d = a_values - b_values
    n_seeds = d.shape[0]
    if d.ndim == 2:
        seed_diffs, prompt_diffs = d.mean(axis=1), d.mean(axis=0)
    else:
        seed_diffs = d
        prompt_diffs = (None if prompt_means is None
                        else np.subtract(*(np.asarray(p, dtype=float) for p in prompt_means)))
    n_prompts = None if prompt_diffs is None else len(prompt_diffs)
    # Each term: (its share of Var(mean), df). seed = MS_seed / (K J), prompt = MS_prompt / (K J)
    terms: dict[str, tuple[float, float]] = {}
    words = []
    if n_seeds >= 2 and (interaction is None or n_seeds >= POOL_BELOW):
        terms["seed"] = (float(np.var(seed_diffs, ddof=1)) / n_seeds, n_seeds - 1)
        words.append(f"the spread of the {n_seeds} per-seed differences")
    elif interaction is not None:
        terms["seed"] = (interaction.variance / n_seeds, interaction.df)
        words.append(f"the run's pooled loss-by-seed interaction ({interaction.df} df)")
    if prompt_diffs is not None and n_prompts >= 2:
        terms["prompt"] = (float(np.var(prompt_diffs, ddof=1)) / n_prompts, n_prompts - 1)
        words.append(f"the spread over {n_prompts} shared prompts")
    components = {name: share for name, (share, _) in terms.items()}
    if d.ndim == 2 and n_seeds >= 2 and d.shape[1] >= 2:
        # MS_resid is in both parts: subtract it once, each part's component clipped at 0
        cells = d - seed_diffs[:, None] - prompt_diffs[None, :] + d.mean()
        df_resid = (n_seeds - 1) * (d.shape[1] - 1)
        residual = float((cells ** 2).sum()) / df_resid / d.size
        components = {name: max(0.0, share - residual) for name, share in components.items()}
        components["residual"] = residual
        # Var = the unclipped parts + (clipped parts - 1) * MS_resid / (K J), for the df
        clipped = sum(share <= residual for share, _ in terms.values())
        terms = {name: term for name, term in terms.items() if term[0] > residual}
        terms["residual"] = ((clipped - 1) * residual, df_resid)
        words.append("their common seed-by-prompt residual subtracted once (two-way analysis)")
    elif len(terms) == 2:
        words.append("the seed-by-prompt residual counted in both (conservative)")
    omitted = tuple(name for name in ("seed", "prompt") if name not in components)
    words += [f"leaves out the {name} part ({_OMITTED[name]})" for name in omitted]
    mean_difference = float(d.mean())
    if not components:
        return BlockedDifference(mean_difference, None, n_seeds, n_prompts, None, {},
                                 "no standard error: one seed and no per-prompt scores", omitted)
    return BlockedDifference(mean_difference, math.sqrt(sum(components.values())), n_seeds,
                             n_prompts, _satterthwaite(list(terms.values())), components,
                             "; ".join(words), omitted)


_OMITTED = {
    "seed": "one training seed and no pooled interaction: prompt-only, training noise unmeasured",
    "prompt": "no per-prompt scores: the loss-by-prompt variance is not in it",
}


def _satterthwaite(terms: list[tuple[float, float]]) -> float | None:
    """Satterthwaite's degrees of freedom of a sum of mean-square terms (share, df); None when
    the sum is 0 (nothing varies: the normal distribution stands in)."""
    total = sum(share for share, _ in terms)
    spread = sum(share ** 2 / df for share, df in terms if share)
    return total ** 2 / spread if total > 0 and spread > 0 else None


def pooled_interaction(per_seed_fitness: Mapping[str, Mapping[Any, float]],
                       ) -> PooledInteraction | None:
    """The loss-by-seed interaction pooled over every loss trained on two or more shared seeds.

    A least-squares fit of fitness = loss + seed to the (possibly unbalanced) loss x seed table;
    its residual mean square estimates one loss's interaction variance, and twice it is the
    variance of a per-seed difference of two losses. For two losses on K seeds this is the
    variance of their K differences with K - 1 df; with L losses on the same K seeds it is the
    df-weighted mean of all pairs' variances, with df (L - 1)(K - 1) and not pairs x (K - 1),
    which would count each loss's seeds once per pair. The prompts and sampling seeds are the
    same for every replicate, so no prompt-sampling variance is subtracted.

    Args:
        per_seed_fitness: per loss, its fitness per training seed.

    Returns:
        The variance of one seed's difference and its df; None when the table has no
        residual df (no two losses share two seeds).
    """
    losses = [name for name, by_seed in per_seed_fitness.items() if by_seed]
    seeds = sorted({seed for name in losses for seed in per_seed_fitness[name]}, key=str)
    cells = [(losses.index(name), seeds.index(seed), float(value))
             for name in losses for seed, value in per_seed_fitness[name].items()]
    if not cells:
        return None
    design = np.zeros((len(cells), len(losses) + len(seeds)))
    for row, (loss, seed, _) in enumerate(cells):
        design[row, loss] = design[row, len(losses) + seed] = 1.0
    fitness = np.array([value for _, _, value in cells])
    df = len(cells) - int(np.linalg.matrix_rank(design))
    if df <= 0:
        return None
    coefficients = np.linalg.lstsq(design, fitness, rcond=None)[0]
    residual = float(((fitness - design @ coefficients) ** 2).sum())
    return PooledInteraction(2 * residual / df, df)


# ---- many comparisons -------------------------------------------------------------------

def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the k-th smallest p times
    (m - k + 1), made non-decreasing and capped at 1. Reject where adjusted <= alpha."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def better_than_reference(differences: Mapping[str, BlockedDifference],
                          alpha: float = FAMILY_ALPHA) -> set[str]:
    """The candidates better than the reference at family-wise level alpha (Holm).

    One-sided: each test is "candidate minus reference <= 0" against "> 0", p from the t
    distribution with the difference's df (normal when None). The family is every candidate
    given; one without a standard error, or whose standard error leaves out a source of noise
    (the training noise: one seed and no pooled interaction; the prompts': no per-prompt
    scores), makes no claim: its p-value counts as 1.
    """
    names = list(differences)
    p_values = [None if differences[n].omitted else differences[n].p_value() for n in names]
    adjusted = holm_adjusted([1.0 if p is None else p for p in p_values])
    return {name for name, q in zip(names, adjusted, strict=True) if q <= alpha}


def chance_any_passes(m: int, threshold_se: float = TIE_SE, df: float | None = None) -> float:
    """The chance that at least one of m independent candidates with no true difference is
    more than threshold_se standard errors above the reference (one-sided, uncorrected)."""
    from scipy import stats as scipy_stats  # lazy: see correlation

    tail = scipy_stats.norm.sf(threshold_se) if df is None else scipy_stats.t.sf(threshold_se, df)
    return float(1 - (1 - tail) ** m)


# ---- rows ---------------------------------------------------------------------------------
# A run's rows, read duck-typed (an archive Row, the TUI's CandidateRow): `id`, `fitness`,
# `stderr`, `code` (None for the untrained policy) and `metrics`, where metrics["per_prompt"]
# holds each held-out prompt's contribution to the fitness (averaged over seeds) and
# metrics["replicates"] one {"replicate", "train_seed", "fitness", "stderr", "per_prompt"} entry
# per training seed. Replicate k is trained with the same seed for every loss of a run.

Replicates = list[tuple[float, float | None]]  # (fitness, sampling stderr) per training seed
SeedScores = dict[int, tuple[float, list[float] | None]]  # replicate -> (fitness, per prompt)


def replicates_of(row: Any) -> Replicates:
    """The row's per-seed (fitness, stderr) pairs (empty when none were recorded)."""
    return [(float(e["fitness"]), e.get("stderr")) for e in _entries(row)]


def _entries(row: Any) -> list[dict]:
    entries = (row.metrics or {}).get("replicates") or []
    return [e for e in entries
            if isinstance(e, dict) and isinstance(e.get("fitness"), int | float)]


def per_prompt(row: Any) -> list[float] | None:
    return _numbers((row.metrics or {}).get("per_prompt"))


def _numbers(values: Any) -> list[float] | None:
    if isinstance(values, list) and values and all(isinstance(v, int | float) for v in values):
        return [float(v) for v in values]
    return None


def _aligned(scores: Sequence[Any]) -> bool:
    """Every entry is a list of per-prompt scores, all on the same two or more prompts."""
    lengths = {len(s) if isinstance(s, list) else 0 for s in scores}
    return len(lengths) == 1 and lengths.pop() >= 2


def seed_scores(row: Any) -> SeedScores:
    """The row's fitness and per-prompt scores per replicate; a row with one training seed (or
    recorded before replicates were) is replicate 0."""
    entries = _entries(row)
    if not entries:
        return {} if row.fitness is None else {0: (float(row.fitness), per_prompt(row))}
    return {e["replicate"] if isinstance(e.get("replicate"), int) else k:
            (float(e["fitness"]), _numbers(e.get("per_prompt"))) for k, e in enumerate(entries)}


def seed_variance(replicates: Replicates) -> float:
    """One loss's variance between training seeds: the variance of its per-seed fitnesses.
    Every seed is scored on the same prompts with the same sampling seeds, so the prompt
    sampling noise is common to all seeds and none is subtracted."""
    return variance([f for f, _ in replicates])


def pooled_seed_variance(groups: Iterable[Replicates]) -> float | None:
    """The between-seed variance pooled over losses (weights: seeds - 1); None when no loss
    has two seeds."""
    total = weight = 0.0
    for replicates in groups:
        if len(replicates) >= 2:
            total += (len(replicates) - 1) * seed_variance(replicates)
            weight += len(replicates) - 1
    return total / weight if weight else None


def replicate_stderr(replicates: Replicates, pooled: float | None,
                     scores: Sequence[Any] | None = None) -> float | None:
    """The standard error of a loss's fitness, its mean over K seeds scored on the same J
    prompts: Var = s_seed / K + s_prompt / J + s_e / (K J).

    Args:
        replicates: per seed, its fitness and sampling standard error.
        pooled: the run's pooled seed variance, used below POOL_BELOW seeds.
        scores: each seed's per-prompt scores (K x J; a seed without them is None): with two
            or more seeds, all with scores on the same prompts, the two-way analysis of
            seed_blocked_difference against zero, every part estimated.

    Without per-prompt scores: the seed part from the loss's own seeds (POOL_BELOW or more, or
    no pool) or the pool, divided by K, plus the prompt part, the seeds' mean squared sampling
    error, not divided by K (the prompts are shared). One seed without a pool keeps its own
    error (prompt sampling only).
    """
    k = len(replicates)
    if scores is not None and k >= 2 and _aligned(scores):
        matrix = np.asarray(scores, dtype=float)
        return seed_blocked_difference(matrix, np.zeros_like(matrix)).stderr
    if any(e is None for _, e in replicates):
        return None
    sampling = sum(e ** 2 for _, e in replicates) / k
    own = k >= POOL_BELOW or (k >= 2 and pooled is None)
    seeds = seed_variance(replicates) if own else (pooled or 0.0)
    return math.sqrt(seeds / k + sampling)


def seed_variance_source(replicates: int, pooled: float | None) -> str:
    """Which estimate of the seed variance a row's standard error uses, in words."""
    if replicates >= POOL_BELOW:
        return f"each loss's own {replicates} training seeds"
    if pooled is None:
        return "none: one training seed per loss, so training variance is not measured"
    return (f"pooled across the run's losses trained on two or more seeds (estimated seed "
            f"variance {pooled:.3g})")


def run_seed_variance(rows: Iterable[Any]) -> float | None:
    """The seed variance pooled over the trained rows with two or more seeds."""
    return pooled_seed_variance(replicates_of(r) for r in rows
                                if r.fitness is not None and r.code)


def row_stderr(row: Any, pooled: float | None) -> float | None:
    """The row's standard error, training noise included (replicate_stderr): from its own
    seeds, or for one seed the run's pooled seed variance added to its sampling error. The
    untrained policy has no training noise."""
    replicates = replicates_of(row)
    if len(replicates) >= 2:
        return replicate_stderr(replicates, pooled, [s for _, s in seed_scores(row).values()])
    if row.stderr is None or not row.code or pooled is None:
        return row.stderr
    return math.sqrt(row.stderr ** 2 + pooled)


def run_seed_pool(rows: Iterable[Any]) -> PooledInteraction | None:
    """The run's pooled seed variance of one trained loss with its df (sum of seeds - 1): the
    training noise of a trained loss against the untrained policy."""
    groups = [replicates_of(r) for r in rows if r.fitness is not None and r.code]
    pooled = pooled_seed_variance(groups)
    df = sum(len(g) - 1 for g in groups if len(g) >= 2)
    return None if pooled is None else PooledInteraction(pooled, df)


def run_interaction(rows: Iterable[Any]) -> PooledInteraction | None:
    """pooled_interaction over the trained rows' recorded seeds (replicate k shares its
    training seed across the run's losses)."""
    return pooled_interaction({row.id: {k: f for k, (f, _) in seed_scores(row).items()}
                               for row in rows if row.fitness is not None and row.code})


def difference(a: Any, b: Any, interaction: PooledInteraction | None = None,
               seed_pool: PooledInteraction | None = None) -> BlockedDifference | None:
    """a minus b, blocked by the training seeds both were trained on and paired by prompt
    (seed_blocked_difference); None without both fitnesses.

    The untrained policy has no training seed: its scores stand beside every seed of the other
    row, and in place of the interaction of two trained losses the trained side's seed
    variance (seed_pool, run_seed_pool) is pooled below POOL_BELOW seeds. Rows with no
    seed in common, or one shared seed and no per-prompt scores, give the unpaired difference
    of fitnesses with the rows' own errors (paired False; it makes no claim).
    """
    if a.fitness is None or b.fitness is None:
        return None
    sa, sb = seed_scores(a), seed_scores(b)
    if not a.code:
        sa = dict.fromkeys(sb, next(iter(sa.values())))
    if not b.code:
        sb = dict.fromkeys(sa, next(iter(sb.values())))
    common = [k for k in sa if k in sb]
    pool = interaction if a.code and b.code else seed_pool if a.code or b.code else None
    grids = [[s[k][1] for k in common] for s in (sa, sb)]
    if common and _aligned(grids[0] + grids[1]):
        return seed_blocked_difference(*grids, interaction=pool)
    means = (per_prompt(a), per_prompt(b))
    aligned = all(means) and len(means[0]) == len(means[1])
    if common:
        d = seed_blocked_difference([sa[k][0] for k in common], [sb[k][0] for k in common],
                                    interaction=pool, prompt_means=means if aligned else None)
        if d.stderr is not None:
            return d
    ea, eb = a.stderr, b.stderr
    stderr = math.sqrt(ea ** 2 + eb ** 2) if ea is not None and eb is not None else None
    return BlockedDifference(a.fitness - b.fitness, stderr, len(common), None, None, {},
                             "unpaired: no per-prompt scores or training seeds in common "
                             "(the rows' own errors combined)", ("seed", "prompt"),
                             paired=False)


@dataclass(frozen=True)
class Comparison:
    """Every scored row against the best and against dpo (REFERENCE_ID), seed-blocked.

    tied: the best and every row not below it at family-wise level FAMILY_ALPHA (TIE_RULE);
    better: the rows better than dpo at that level (BETTER_RULE).
    """

    best: Any
    to_best: dict[str, BlockedDifference | None]
    to_reference: dict[str, BlockedDifference | None]
    tied: set[str]
    better: set[str]
    interaction: PooledInteraction | None
    pooled: float | None


def compare(rows: Iterable[Any]) -> Comparison | None:
    """The corrected tie and better-than-dpo rules over the scored rows; None when none is."""
    scored = [r for r in rows if r.fitness is not None]
    if not scored:
        return None
    interaction, seed_pool = run_interaction(scored), run_seed_pool(scored)
    best = max(scored, key=lambda r: r.fitness)
    reference = next((r for r in scored if r.id == REFERENCE_ID), None)
    to_best = {r.id: difference(r, best, interaction, seed_pool) for r in scored
               if r is not best}
    to_reference = {r.id: difference(r, reference, interaction, seed_pool) for r in scored
                    if reference is not None and r is not reference}
    below = better_than_reference({id: replace(d, mean=-d.mean)
                                   for id, d in to_best.items() if d is not None})
    better = better_than_reference({id: d for id, d in to_reference.items() if d is not None})
    return Comparison(best, to_best, to_reference, {r.id for r in scored} - below, better,
                      interaction, run_seed_variance(scored))


def interaction_source(interaction: PooledInteraction | None) -> str:
    """Where the loss-by-seed interaction of single-seed comparisons comes from, in words."""
    if interaction is None:
        return ("not measured: no two losses share two training seeds (discovery.baseline_seeds"
                " = 1, or a run of an earlier version), so a comparison on one seed leaves out "
                "the training noise and makes no claim")
    return (f"pooled from the losses trained on two or more shared seeds: variance of one "
            f"seed's difference {interaction.variance:.3g}, {interaction.df} df")

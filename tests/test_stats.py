"""The statistics of selfdisco/stats.py: on hand-computed examples, the mean and its standard
error with their edge rules, the correlation, the seed variance (a candidate's own and pooled),
paired differences and the tie rule; and the training seed as a blocking factor (issue 27): the
seed-blocked difference of two losses and its two-way standard error, the pooled loss-by-seed
interaction, Holm's correction, and simulations with known effects in which the intervals cover
at the nominal rate and nothing beats dpo when nothing does."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
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


# ---- training seeds as blocks (issue 27) ----------------------------------------
N_PROMPTS = 32
N_RUNS = 400  # simulated experiments per case
# The binomial s.e. of a 95% coverage over N_RUNS runs is about 0.011: allow three of them.
COVERAGE_TOLERANCE = 3 * stats.proportion_stderr(0.95, N_RUNS)
# Sizes near the cpu recipe's measurements (issue 27): seeds ranked alike by every loss (sd
# 0.06 common to all), per-seed differences spreading by about 0.014 (interaction 0.01 per
# loss), prompts far apart (0.2) but mostly alike for every loss.
EFFECTS = {"prompt": 0.2, "seed": 0.06, "seed_prompt": 0.1, "loss_prompt": 0.05,
           "interaction": 0.01, "residual": 0.08}


def simulate(rng: np.random.Generator, deltas: list[float], n_seeds: int, n_runs: int = N_RUNS,
             **sizes: float) -> np.ndarray:
    """Scores [run, loss, seed, prompt]: loss l's true value deltas[l] plus random effects of
    the given standard deviations (EFFECTS, overridden by sizes); the seed, prompt and
    seed-by-prompt effects are common to every loss, like the shared seeds and prompts."""
    sd = EFFECTS | sizes
    n_losses = len(deltas)

    def effect(name: str, shape: tuple[int, ...]) -> np.ndarray:
        return rng.normal(0.0, sd[name], (n_runs, *shape))

    return (np.asarray(deltas)[:, None, None]
            + effect("prompt", (1, 1, N_PROMPTS)) + effect("seed", (1, n_seeds, 1))
            + effect("seed_prompt", (1, n_seeds, N_PROMPTS))
            + effect("loss_prompt", (n_losses, 1, N_PROMPTS))
            + effect("interaction", (n_losses, n_seeds, 1))
            + effect("residual", (n_losses, n_seeds, N_PROMPTS)))


def as_row(name: str, scores: np.ndarray) -> Row:
    """The row a run records for a loss scored seed by seed (seeds x prompts): per-seed
    fitnesses with their sampling errors, and per-prompt scores averaged over the seeds."""
    per_seed = [{"replicate": k, "train_seed": k, "fitness": float(s.mean()),
                 "stderr": float(s.std(ddof=1) / math.sqrt(s.size))}
                for k, s in enumerate(scores)]
    metrics = {"per_prompt": [float(v) for v in scores.mean(axis=0)]}
    if len(per_seed) > 1:
        metrics["replicates"] = per_seed
    return Row(name, float(scores.mean()), per_seed[0]["stderr"], metrics=metrics)


def covers(d: stats.BlockedDifference, delta: float) -> bool:
    low, high = d.interval(0.95)
    return low <= delta <= high


# ---- by hand ------------------------------------------------------------------------------

def test_the_two_way_standard_error_by_hand():
    rng = np.random.default_rng(0)
    effects = np.array([[0.0], [1.0], [2.0]]) + np.array([0.0, 2.0, -1.0, 1.0, 3.0])
    a, b = effects + rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    d = a - b
    k, j = d.shape
    ms_seed = j * d.mean(axis=1).var(ddof=1)
    ms_prompt = k * d.mean(axis=0).var(ddof=1)
    cells = d - d.mean(axis=1, keepdims=True) - d.mean(axis=0, keepdims=True) + d.mean()
    ms_resid = (cells ** 2).sum() / ((k - 1) * (j - 1))
    assert ms_seed > ms_resid and ms_prompt > ms_resid  # no clipping in this draw
    result = stats.seed_blocked_difference(a, b)
    assert result.mean == pytest.approx(d.mean())
    assert result.stderr ** 2 == pytest.approx((ms_seed + ms_prompt - ms_resid) / (k * j))
    assert sum(result.components.values()) == pytest.approx(result.stderr ** 2)
    shares = [ms_seed / (k * j), ms_prompt / (k * j), -ms_resid / (k * j)]
    dfs = [k - 1, j - 1, (k - 1) * (j - 1)]
    assert result.df == pytest.approx(
        sum(shares) ** 2 / sum(s ** 2 / df for s, df in zip(shares, dfs, strict=True)))
    assert (result.n_seeds, result.n_prompts, result.omitted) == (3, 5, ())


def test_a_component_below_zero_is_clipped_to_zero():
    # Identical per-seed means: MS_seed = 0 < MS_resid, so the seed component is 0, not < 0.
    d = np.array([[0.1, 0.3, -0.2, 0.0], [0.3, 0.1, 0.0, -0.2]])
    result = stats.seed_blocked_difference(d, np.zeros_like(d))
    assert result.components["seed"] == 0.0
    ms_prompt = 2 * d.mean(axis=0).var(ddof=1)
    assert result.stderr ** 2 == pytest.approx(ms_prompt / d.size)  # MS_resid cancels
    assert result.df == pytest.approx(d.shape[1] - 1)


def test_per_seed_fitnesses_alone_give_the_spread_of_the_differences():
    result = stats.seed_blocked_difference([0.20, 0.39, 0.51], [0.16, 0.34, 0.47])
    assert result.mean == pytest.approx(0.0433333)
    assert result.stderr == pytest.approx(stats.mean_stderr([0.04, 0.05, 0.04])[1])
    assert result.df == 2
    assert result.omitted == ("prompt",) and "loss-by-prompt" in result.basis


def test_pooled_interaction_is_the_pairs_df_weighted_mean_with_honest_df():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(4, 3))  # 4 losses on the same 3 seeds
    pooled = stats.pooled_interaction(
        {f"loss{i}": dict(enumerate(table[i])) for i in range(4)})
    pairs = [np.var(table[x] - table[y], ddof=1) for x in range(4) for y in range(x + 1, 4)]
    assert pooled.variance == pytest.approx(np.mean(pairs))
    assert pooled.df == (4 - 1) * (3 - 1)  # not 6 pairs x 2
    # Two losses: the variance of their per-seed differences, K - 1 df.
    two = stats.pooled_interaction({"a": {1: 0.2, 2: 0.4, 3: 0.5}, "b": {1: 0.16, 2: 0.34,
                                                                        3: 0.47}})
    assert two.variance == pytest.approx(np.var([0.04, 0.06, 0.03], ddof=1))
    assert two.df == 2


def test_no_pooled_interaction_without_two_shared_seeds():
    assert stats.pooled_interaction({"a": {1: 0.2, 2: 0.3}, "b": {1: 0.1, 3: 0.4},
                                     "c": {4: 0.5}}) is None
    assert stats.pooled_interaction({}) is None
    one_seed = Row("c", 0.3, metrics={"per_prompt": [0.3, 0.3]})
    assert stats.run_interaction([one_seed, one_seed]) is None


def test_run_interaction_reads_the_rows_replicates_by_training_seed():
    rng = np.random.default_rng(2)
    rows = [as_row(f"loss{i}", rng.normal(size=(3, N_PROMPTS))) for i in range(3)]
    table = {r.id: {e["train_seed"]: e["fitness"] for e in r.metrics["replicates"]}
             for r in rows}
    assert stats.run_interaction(rows) == stats.pooled_interaction(table)


def test_holm_by_hand():
    assert stats.holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, 0.02])
    assert stats.holm_adjusted([]) == []


def test_ten_null_candidates_pass_an_uncorrected_two_se_rule_a_fifth_of_the_time():
    assert stats.chance_any_passes(10) == pytest.approx(0.21, abs=0.006)  # issue 27's figure
    assert stats.chance_any_passes(1) == pytest.approx(0.02275, abs=1e-5)


# ---- what blocking cancels and what it cannot know ----------------------------------------

def test_a_seed_effect_common_to_both_losses_cancels():
    rng = np.random.default_rng(3)
    scores = simulate(rng, [0.03, 0.0], n_seeds=3, n_runs=1)[0]
    common = rng.normal(0.0, 1.0, (3, 1))  # a large seed effect, the same for both losses
    before = stats.seed_blocked_difference(scores[0], scores[1])
    after = stats.seed_blocked_difference(scores[0] + common, scores[1] + common)
    assert after.stderr == pytest.approx(before.stderr, rel=1e-9)
    assert after.mean == pytest.approx(before.mean, rel=1e-9)

    def old_stderr(a: np.ndarray, b: np.ndarray) -> float:
        rows = [as_row("a", a), as_row("b", b)]
        return stats.difference(*rows, stats.run_seed_variance(rows)).stderr

    assert old_stderr(scores[0] + common, scores[1] + common) > 5 * old_stderr(*scores)


def test_one_seed_without_a_pooled_interaction_says_it_is_prompt_only():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(1, N_PROMPTS)), rng.normal(size=(1, N_PROMPTS))
    result = stats.seed_blocked_difference(a, b)
    assert result.omitted == ("seed",)
    assert "prompt-only" in result.basis and "training noise unmeasured" in result.basis
    assert set(result.components) == {"prompt"}
    assert result.stderr ** 2 == pytest.approx(np.var(a - b, ddof=1) / N_PROMPTS)
    assert result.df == N_PROMPTS - 1
    # A pooled interaction adds its variance once (K = 1) and names its source.
    pooled = stats.PooledInteraction(variance=0.01, df=6)
    with_pool = stats.seed_blocked_difference(a, b, interaction=pooled)
    assert with_pool.omitted == () and "pooled loss-by-seed interaction (6 df)" in with_pool.basis
    assert with_pool.stderr ** 2 == pytest.approx(result.stderr ** 2 + 0.01)
    # One seed's fitness and nothing else: no standard error at all.
    assert stats.seed_blocked_difference([0.4], [0.3]).stderr is None


# ---- simulations with known effects ---------------------------------------------------------

@pytest.mark.parametrize("n_seeds", [2, 4, 8])
def test_blocked_intervals_cover_at_the_nominal_rate_and_the_old_analysis_is_wider(n_seeds):
    # Measured (400 runs): coverage 0.945 / 0.955 / 0.948 for K = 2 / 4 / 8 (4000 runs: 0.954
    # / 0.957 / 0.958). Today's difference (pooled seed variance, +-1.96 s.e.) covers 0.960 /
    # 0.963 / 0.993 with a mean s.e. 2.0 / 2.0 / 1.8 times the blocked one: it carries the seed
    # effect both losses share, less a prompt-sampling share that shared prompts never had.
    # Not asserted: with an interaction that dominates (0.03 per loss), K = 2 on its own seeds
    # covers only 0.91 (Satterthwaite's df, about 1.6, is too optimistic when MS_seed is
    # small by chance); the pooled interaction (below POOL_BELOW seeds) is the remedy.
    delta = 0.03
    rng = np.random.default_rng(10 + n_seeds)
    scores = simulate(rng, [delta, 0.0], n_seeds)
    new = [stats.seed_blocked_difference(s[0], s[1]) for s in scores]
    old = []
    for s in scores:
        rows = [as_row("a", s[0]), as_row("b", s[1])]
        old.append(stats.difference(*rows, stats.run_seed_variance(rows)))
    coverage = np.mean([covers(d, delta) for d in new])
    assert abs(coverage - 0.95) <= COVERAGE_TOLERANCE, coverage
    old_coverage = np.mean([abs(d.mean - delta) <= 1.96 * d.stderr for d in old])
    width_ratio = np.mean([d.stderr for d in old]) / np.mean([d.stderr for d in new])
    assert width_ratio > 1.5, width_ratio
    assert old_coverage >= coverage - COVERAGE_TOLERANCE, old_coverage


def test_one_seed_needs_the_pooled_interaction_to_cover():
    # Measured (400 runs, a larger interaction of 0.03 per loss): prompt-only intervals cover
    # 0.64, today's difference (the same s.e., with 1.96) 0.63; with the interaction pooled
    # from three baselines on four seeds (6 df) 0.96 (conservative: the pool and the prompt
    # spread both hold the seed-by-prompt residual).
    delta = 0.03
    rng = np.random.default_rng(20)
    scores = simulate(rng, [delta, 0.0], n_seeds=1, interaction=0.03)
    baselines = simulate(rng, [0.0, 0.0, 0.0], n_seeds=4, interaction=0.03)
    pools = [stats.pooled_interaction({i: dict(enumerate(run[i].mean(axis=1)))
                                       for i in range(3)}) for run in baselines]
    prompt_only = np.mean([covers(stats.seed_blocked_difference(s[0], s[1]), delta)
                           for s in scores])
    pooled = np.mean([covers(stats.seed_blocked_difference(s[0], s[1], interaction=p), delta)
                      for s, p in zip(scores, pools, strict=True)])
    assert prompt_only < 0.95 - 5 * COVERAGE_TOLERANCE, prompt_only
    assert abs(pooled - 0.95) <= COVERAGE_TOLERANCE, pooled


def test_holm_calls_no_null_candidate_better_in_95_percent_of_runs():
    # Ten candidates equal to dpo, all on the same 4 seeds, the interaction pooled over the
    # run's 11 losses. Measured (400 runs): Holm calls none better in 0.978 of runs (2000
    # runs: 0.962); the uncorrected 2 s.e. rule calls at least one better in 0.14 (0.16; below
    # 0.21 because the ten comparisons share dpo's noise).
    rng = np.random.default_rng(30)
    m = 10
    runs = simulate(rng, [0.0] * (m + 1), n_seeds=4, interaction=0.02)
    none_better = any_past_two_se = 0
    for run in runs:
        pool = stats.pooled_interaction({i: dict(enumerate(run[i].mean(axis=1)))
                                         for i in range(m + 1)})
        differences = {f"c{c}": stats.seed_blocked_difference(run[c], run[0], interaction=pool)
                       for c in range(1, m + 1)}
        none_better += not stats.better_than_reference(differences)
        any_past_two_se += any(d.mean > stats.TIE_SE * d.stderr for d in differences.values())
    assert none_better / N_RUNS >= 0.95 - COVERAGE_TOLERANCE, none_better / N_RUNS
    assert any_past_two_se / N_RUNS > 0.1, any_past_two_se / N_RUNS

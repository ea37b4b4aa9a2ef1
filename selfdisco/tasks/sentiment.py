"""sentiment: the paper's IMDb experiment in miniature, and the default task.

Prompts are short movie-review openings (made from templates, or cut from a dataset of reviews
the user names). Preference pairs come from the reference policy itself: sample several raw
continuations per training prompt through vLLM, score them with the sentiment scorer, and keep
the best and the worst as (chosen, rejected) when their scores differ by more than a margin.

Fitness is the reward at a fixed KL budget (kl_budget nats, 6 on the cpu recipe): the mean
reward (the scorer's value per sample, VADER compound in [-1, 1], averaged per prompt) of the
policy brought to KL(policy || reference) = budget by scaling its LoRA delta, down when it
drifted past the budget and up when it stopped under it, read off two measured points
(budget.py). KL is the exact per-token estimate along the sampled path from every scored sample
(kl.py), and its noise is part of the fitness's standard error. Reward and KL of the trained
policy itself stay in the metrics beside it. The untrained base has KL exactly 0, so its fitness
is its reward; drift past the budget buys nothing and stopping short of it costs nothing, so
losses are compared at equal KL: one slice of the paper's reward-vs-KL frontier.

fitness_version 1 is how runs of earlier versions scored (a policy under the budget read at its
own KL, KL by the sampled log-ratio, the interpolation weight taken as fixed): a run whose
recorded rows were scored so keeps it when resumed (recorded_options).

Why a budget and not J = reward - kl_weight * KL (still available: kl_budget = 0, kl_weight >
0): measured on the cpu recipe (24-token continuations, beta 0.1), the step from the base to dpo
bought 0.038 reward per nat and the step from dpo to dpo at beta / 4 bought 0.047 per nat, so no
single weight ranks dpo above both the base and its weakly regularised control; the frontier is
not concave enough for a linear price of KL. Why 6 nats: the catalog's working losses reach
6.9-10.5 nats on this recipe over seeds, so each of them is shrunk a little (a scale of 0.75-0.95)
and all are compared at one KL; a loss that stays under 6 is grown to it (fitness_version 1
scored it at its own KL). The training beta is no guide: it weighs KL against the
Bradley-Terry reward of the preference labels, in logits, not VADER's scale.

The standard error is over prompts of the per prompt values (every policy on the same prompts
and sampling seeds, so differences are paired). With kl_weight, J_i = mean reward_i - kl_weight
* mean KL_i per prompt when every prompt has the same number of KL samples, else the two
standard errors are added (se_reward + kl_weight * se_KL); metrics["fitness_stderr"] says which.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.errors import UserError
from selfdisco.llm.models import model_identity
from selfdisco.presets import per_preset
from selfdisco.rundir.paths import write_text_atomic
from selfdisco.tasks.base import (
    Fitness,
    TaskContext,
    preset_settings,
    train_recipe,
)
from selfdisco.tasks.budget import (
    Point,
    at_budget,
    parse_kl_targets,
    reach_budget,
    scaled_adapter,
    scaling_path,
)
from selfdisco.tasks.kl import sequence_kls
from selfdisco.tasks.openings import Split, dataset_openings, split_openings, template_openings
from selfdisco.tasks.sampling import sample_completions, served_adapter
from selfdisco.tasks.scorers import make_scorer, scorer_label
from selfdisco.train.settings import PAPER_RECIPE, SMOKE_RECIPE, TrainSettings

# Part of the pairs' cache key (and the burn-in cache's): bump it when the way pairs are
# sampled or chosen changes.
PAIRS_VERSION = 1
PROMPT_SETS = ("search", "unused")  # SentimentSettings.prompt_set
FITNESS_VERSION = 2  # SentimentSettings.fitness_version: the rule new runs score under


@dataclass(frozen=True)
class SentimentSettings:
    scorer: str = "vader"
    """Reward model: "vader" (VADER compound) or "hf:MODEL" (a sentiment classifier)."""
    reviews: str = ""
    """A dataset of reviews (Hugging Face id or local file) to cut openings from; empty: the
    project's own template openings."""
    review_column: str = "text"
    """Column of review text in `reviews`."""
    opening_words: int = 6
    """Words kept of each review when openings are cut from `reviews`."""
    split_seed: int = 0
    """Seed of the train / held-out split of the openings (fixed across candidates)."""
    train_prompts: int = 256
    """Training openings sampled for preference pairs."""
    pair_samples: int = 4
    """Continuations sampled per training opening; the best and worst form a pair."""
    margin: float = 0.3
    """Keep a pair only when its two scores differ by more than this (negative: keep all)."""
    eval_prompts: int = 64
    """Held-out openings the policy is scored on."""
    eval_samples: int = 4
    """Policy samples per held-out opening."""
    prompt_set: str = "search"
    """Which held-out openings are scored: "search" (the first eval_prompts, those discovery
    scores on) or "unused" (the heldout_prompts after them, which discovery never scores;
    `selfdisco heldout` sets it)."""
    heldout_prompts: int = 0
    """With prompt_set = "unused": how many openings (0: eval_prompts)."""
    sampling_seed: int = -1
    """Seed the scored policy samples derive from; -1: the task seed, discovery's own
    (`selfdisco heldout` sets a seed of its own)."""
    max_tokens: int = 24
    """Length of every sampled continuation, in tokens."""
    measure_kl: bool = True
    """Estimate KL(policy || reference) for adapters (two forward passes per scored sample)."""
    kl_samples: int = 0
    """Samples the KL is estimated from, one per opening first (0: all of them)."""
    kl_budget: float = 6.0
    """KL budget in nats: fitness is the reward at this KL (module docstring, budget.py); 0:
    no budget (kl_weight applies instead)."""
    kl_weight: float = 0.0
    """Without a budget: fitness = mean reward - kl_weight * KL; 0 (and no budget): the raw
    reward."""
    kl_targets: str = ""
    """Comma-separated KL values in nats (e.g. "3,6"): an adapter is also measured shrunk along
    its scaling path toward each one under its KL (budget.scaling_path), and metrics["path"]
    keeps every measured point; empty: none. The held-out frontier sets it; the search does not
    (each target costs one more measurement)."""
    concurrency: int = 8
    """Requests in flight to the server."""
    fitness_version: int = FITNESS_VERSION
    """2: the budget rule of budget.py, the exact KL estimator; 1: how runs of earlier versions
    scored (module docstring)."""


PRESET_SETTINGS = per_preset({
    # The tiny random model writes noise that rarely carries sentiment: keep every pair, so the
    # loop can run end to end, and make the sets small.
    # Its fitness is KL-weighted rather than budgeted: no second measurement per policy.
    "smoke": SentimentSettings(train_prompts=16, pair_samples=2, margin=-1.0, eval_prompts=8,
                               eval_samples=2, max_tokens=12, kl_budget=0.0, kl_weight=0.02),
    "cpu": SentimentSettings(),
    # Twice the cpu budget for twice the tokens (0.25 nats a token); not measured on a GPU.
    "gpu-zephyr": SentimentSettings(train_prompts=1024, eval_prompts=200, eval_samples=4,
                                    max_tokens=48, kl_samples=200, concurrency=64,
                                    kl_budget=12.0),
})

# The training recipe per preset (config train.recipe), lengths cut to these short texts.
TRAIN_RECIPES = per_preset({
    "smoke": dataclasses.replace(SMOKE_RECIPE, max_prompt_length=24),
    # SmolLM2-135M on 2 CPU cores: about 3-4 s per step at batch 4. Learning rate 1e-3 and beta
    # 0.1: with 1e-4 and 0.05, 32 steps moved rho by under one nat and the samples barely.
    "cpu": TrainSettings(lora_r=16, lora_alpha=32, learning_rate=1e-3, beta=0.1, max_steps=32,
                         batch_size=4, max_length=64, max_prompt_length=24),
    "gpu-zephyr": dataclasses.replace(PAPER_RECIPE, max_length=128, max_prompt_length=32),
})


class SentimentTask:
    """Positive-sentiment continuation of movie-review openings (see module docstring)."""

    name = "sentiment"
    kind = "preference"
    needs_judge = False
    description = ("sentiment reward on held-out review openings at a fixed KL budget: the mean "
                   "reward of the policy's samples once it is brought to the same KL from the "
                   "reference policy as every other (its LoRA delta scaled down or up), so "
                   "neither drifting further nor stopping short changes it")
    pairs_version = PAIRS_VERSION

    def settings(self, ctx: TaskContext) -> SentimentSettings:
        settings = preset_settings(self.name, PRESET_SETTINGS, ctx)
        if settings.kl_weight < 0:
            raise UserError(f"kl_weight must be 0 or more, not {settings.kl_weight}")
        if settings.kl_budget < 0:
            raise UserError(f"kl_budget must be 0 (no budget) or more, not {settings.kl_budget}")
        if settings.kl_budget and settings.kl_weight:
            raise UserError(f"kl_budget = {settings.kl_budget:g} and kl_weight = "
                            f"{settings.kl_weight:g} are two different fitnesses: set one of "
                            "them to 0")
        try:
            targets = parse_kl_targets(settings.kl_targets)
        except ValueError as err:
            raise UserError(f"kl_targets = {settings.kl_targets!r}: {err}; give KL values in "
                            "nats separated by commas, e.g. 3,6") from None
        if targets and not settings.measure_kl:
            raise UserError("kl_targets needs the KL measured: set measure_kl = true")
        if settings.fitness_version not in (1, 2):
            raise UserError(f"fitness_version must be 1 or 2, not {settings.fitness_version}")
        if (settings.kl_weight or settings.kl_budget) and not settings.measure_kl:
            raise UserError("measure_kl = false leaves the KL part of the fitness unknown: set "
                            "kl_budget = 0 and kl_weight = 0 as well (fitness is then the raw "
                            "reward)")
        return settings

    def check_options(self, preset: str, options: dict[str, Any]) -> None:
        """UserError for an unknown or mistyped option or an unknown scorer; reads nothing."""
        settings = self.settings(TaskContext(preset=preset, options=dict(options)))
        scorer_label(settings.scorer)
        check_prompt_choice(settings)

    def train_settings(self, recipe: str) -> TrainSettings:
        """The training recipe of this name (TRAIN_RECIPES)."""
        return train_recipe(self.name, TRAIN_RECIPES, recipe)

    def openings(self, settings: SentimentSettings) -> Split:
        if settings.reviews:
            return dataset_openings(settings.reviews, column=settings.review_column,
                                    words=settings.opening_words, seed=settings.split_seed)
        return split_openings(template_openings(), seed=settings.split_seed)

    def scored_prompts(self, settings: SentimentSettings) -> tuple[list[str], int]:
        """The held-out openings the policy is scored on and the index of the first: the first
        eval_prompts (prompt_set "search"), or the heldout_prompts (0: eval_prompts) after
        them ("unused"); UserError when too few remain."""
        check_prompt_choice(settings)
        held_out = self.openings(settings).held_out
        if settings.prompt_set == "search":
            return held_out[:settings.eval_prompts], 0
        start = settings.eval_prompts
        count = settings.heldout_prompts or settings.eval_prompts
        if start + count > len(held_out):
            raise UserError(
                f"too few unused openings: the task has {len(held_out)} held-out openings and "
                f"the search scores the first {start} (eval_prompts), so "
                f"{max(0, len(held_out) - start)} remain, fewer than the {count} asked for; "
                "ask for fewer (selfdisco heldout --prompt-count N, the task option "
                "heldout_prompts) or score on the search's own (--prompts search)")
        return held_out[start:start + count], start

    def heldout_options(self, preset: str, options: dict[str, Any], *, unused: bool,
                        sampling_seed: int, count: int | None,
                        recorded: list[dict]) -> tuple[dict[str, Any], str, str]:
        """The task options that score held-out evaluations on openings the search never
        scored with a sampling seed of their own (unused), or on the search's own, with a
        sentence saying which.

        Args:
            preset, options: the run's.
            unused: score on the held-out openings after the search's, with sampling_seed.
            sampling_seed: the held-out evaluation's sampling seed.
            count: how many unused openings (None: as many as the search scores on).
            recorded: the run's recorded metrics (their fitness_version: recorded_options).

        Returns:
            (options, the sentence, "": the unused openings always exist, or a UserError says
            there are too few).
        """
        if not unused:
            chosen = {"prompt_set": "search", "sampling_seed": -1}
        else:
            chosen = {"prompt_set": "unused", "sampling_seed": sampling_seed,
                      **({"heldout_prompts": count} if count is not None else {})}
        chosen.update(self.recorded_options(options, recorded))
        settings = self.settings(TaskContext(preset=preset, options={**options, **chosen}))
        prompts, start = self.scored_prompts(settings)
        total = len(self.openings(settings).held_out)
        where = f"held-out openings {start + 1}-{start + len(prompts)} of {total}"
        if not unused:
            return (chosen, f"the search's own {len(prompts)} {where}, with its sampling seed "
                            "(not held out: the search selected on them)", "")
        return (chosen, f"{len(prompts)} {where}, which the search never scored (it scores "
                        f"the first {settings.eval_prompts}), with sampling seed "
                        f"{sampling_seed}, not the search's", "")

    def recorded_options(self, options: dict[str, Any], recorded: list[dict]) -> dict[str, Any]:
        """The fitness version a run's evaluations used: its task option, else 1 when one of
        its recorded evaluations (their metrics) has none (scored by an earlier version), else
        the current one."""
        if "fitness_version" in options:
            return {"fitness_version": int(options["fitness_version"])}
        if any("fitness_version" not in metrics for metrics in recorded):
            return {"fitness_version": 1}
        return {"fitness_version": FITNESS_VERSION}

    # ---- preference data -----------------------------------------------------------------

    def preference_data(self, ctx: TaskContext) -> list[dict[str, str]]:
        """(prompt, chosen, rejected) pairs sampled from the reference policy, cached on disk."""
        settings = self.settings(ctx)
        prompts = self.openings(settings).train[:settings.train_prompts]
        label = scorer_label(settings.scorer)
        path = self.pairs_cache_path(ctx, settings, prompts, label)
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            return [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in rows]
        client = ctx.require_client(self.name)
        started = time.perf_counter()
        samples = sample_completions(client, prompts, n=settings.pair_samples,
                                     max_tokens=settings.max_tokens, seed=ctx.seed,
                                     concurrency=settings.concurrency)
        rewards = make_scorer(settings.scorer).score([s.text for s in samples])
        pairs = make_pairs(prompts, samples, rewards, settings.margin)
        if not pairs:
            raise UserError(f"no preference pairs: no two continuations of the same opening "
                            f"differed by more than the margin {settings.margin}; lower the "
                            "task option margin or raise pair_samples")
        write_text_atomic(path, "".join(json.dumps(p) + "\n" for p in pairs))
        meta = {"pairs": len(pairs), "prompts": len(prompts), "scorer": label,
                "seconds": round(time.perf_counter() - started, 1),
                "settings": dataclasses.asdict(settings), "model": ctx.model_path}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        return [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]

    def pairs_cache_path(self, ctx: TaskContext, settings: SentimentSettings,
                         prompts: list[str], label: str) -> Path:
        """checkpoints/cache/sentiment/pairs-<hash>.jsonl, keyed by everything pairs depend on."""
        key = {"version": PAIRS_VERSION, "model": model_identity(ctx.model_path),
               "prompts": prompts, "seed": ctx.seed, "scorer": label,
               **{f: getattr(settings, f) for f in ("pair_samples", "margin", "max_tokens")}}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return Path(ctx.cache_dir) / "sentiment" / f"pairs-{digest}.jsonl"

    # ---- fitness -------------------------------------------------------------------------

    def score(self, ctx: TaskContext, adapter_path: str | None = None) -> Fitness:
        """The policy's fitness on held-out openings, with reward, KL and length beside it."""
        settings = self.settings(ctx)
        prompts, first = self.scored_prompts(settings)
        if settings.sampling_seed >= 0:  # held-out scoring: draws the search never made
            ctx = dataclasses.replace(ctx, seed=settings.sampling_seed)
        started = time.perf_counter()
        metrics: dict[str, Any] = {
            "fitness_version": settings.fitness_version,
            "policy": str(adapter_path) if adapter_path else "base model (the reference)",
            "prompts": len(prompts), "samples_per_prompt": settings.eval_samples,
            "prompt_set": settings.prompt_set, "first_prompt": first, "sampling_seed": ctx.seed}
        grow = settings.fitness_version >= 2
        full = self.measure(ctx, settings, prompts, adapter_path, metrics)
        metrics.update(full.summary(), kl_weight=settings.kl_weight,
                       kl_budget=settings.kl_budget)
        del metrics["scale"]
        targets = parse_kl_targets(settings.kl_targets) if adapter_path else ()
        if adapter_path and (settings.kl_budget or targets):
            with tempfile.TemporaryDirectory(prefix="selfdisco-budget-") as tmp:
                def shrunk(scale: float) -> Point:
                    """The policy with its delta scaled; at 0 the reference, the base model
                    itself (KL 0 without estimating it)."""
                    scaled = (None if scale == 0 else
                              str(scaled_adapter(adapter_path, scale, Path(tmp) / f"x{scale:.4f}")))
                    point = self.measure(ctx, settings, prompts, scaled, {})
                    return dataclasses.replace(point, scale=scale)

                if settings.kl_budget:
                    points = reach_budget(full, settings.kl_budget, shrunk, grow=grow)
                if targets:
                    path = scaling_path(full, targets, shrunk)
                    metrics.update(kl_targets=list(targets),
                                   path=[p.path_point().to_json() for p in path])
        if settings.kl_budget and adapter_path:
            values, how = at_budget(points, settings.kl_budget, grow=grow)
            value, stderr = stats.mean_stderr(values)
            method = "per prompt, with the KL estimates' noise" if grow else "per prompt"
            metrics.update(budget_rule=how["rule"],
                           budget_points=[p.summary() for p in points[1:]])
        else:
            value, stderr, method, values = kl_regularised(full.rewards, full.kls,
                                                           settings.kl_weight)
        metrics["fitness_stderr"] = method
        metrics["per_prompt"] = [round(v, 6) for v in values]
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        n = sum(1 for r in full.rewards if r) if math.isfinite(value) else 0
        if not n and "budget_rule" in metrics:
            metrics["no_score_reason"] = metrics["budget_rule"]
        return Fitness(value=value, stderr=stderr, metrics=metrics, n=n)

    def measure(self, ctx: TaskContext, settings: SentimentSettings, prompts: list[str],
                adapter_path: str | None, metrics: dict[str, Any]) -> Point:
        """Sample the policy on `prompts`, score the samples and estimate their KL.

        Sampling seeds depend only on ctx.seed, so every policy is measured on the same draws;
        timings and examples go into `metrics`.
        """
        client = ctx.require_client(self.name)
        scorer = make_scorer(settings.scorer)
        started = time.perf_counter()
        with served_adapter(client, adapter_path) as model:
            samples = sample_completions(client, prompts, n=settings.eval_samples,
                                         max_tokens=settings.max_tokens, seed=ctx.seed + 7919,
                                         model=model, concurrency=settings.concurrency)
        rewards: list[list[float]] = [[] for _ in prompts]
        for sample, reward in zip(samples, scorer.score([s.text for s in samples]),
                                  strict=True):
            rewards[sample.prompt_index].append(reward)
        metrics.update(
            scorer=scorer.label,
            mean_tokens=sum(len(s.token_ids) for s in samples) / max(len(samples), 1),
            sampling_seconds=round(time.perf_counter() - started, 2),
            examples=[prompts[s.prompt_index] + s.text for s in samples[:3]])
        kls: list[list[float]] = [[] for _ in prompts]
        if model is None:
            kls = [[0.0] for _ in prompts]  # the base model is the reference
        elif settings.measure_kl:
            kl_started = time.perf_counter()
            scored = kl_subset(samples, settings.kl_samples)
            estimates = sequence_kls(ctx.model_path, str(adapter_path), scored,
                                     dtype=ctx.dtype)
            estimator, other = (("exact", "sampled") if settings.fitness_version >= 2
                                else ("sampled", "exact"))
            for sample, estimate in zip(scored, estimates, strict=True):
                kls[sample.prompt_index].append(estimate.get(estimator))
            kl_other, kl_other_stderr = stats.mean_stderr([e.get(other) for e in estimates])
            metrics.update(kl_dtype=ctx.dtype, kl_n=len(scored), kl_estimator=estimator,
                           kl_other={"estimator": other, "kl": kl_other,
                                     "kl_stderr": kl_other_stderr},
                           kl_seconds=round(time.perf_counter() - kl_started, 2))
        return Point(scale=1.0, rewards=rewards, kls=kls)


def check_prompt_choice(settings: SentimentSettings) -> None:
    """UserError for a prompt_set other than search or unused, or a negative count."""
    if settings.prompt_set not in PROMPT_SETS:
        raise UserError(f"prompt_set must be {' or '.join(PROMPT_SETS)}, not "
                        f"{settings.prompt_set!r}")
    if settings.heldout_prompts < 0:
        raise UserError(f"heldout_prompts must be 0 (as many as eval_prompts) or more, not "
                        f"{settings.heldout_prompts}")


def kl_regularised(rewards: list[list[float]], kls: list[list[float]],
                   weight: float) -> tuple[float, float | None, str, list[float]]:
    """J = mean reward - weight * mean KL over prompts, and its standard error.

    Args:
        rewards: each prompt's per-sample rewards.
        kls: each prompt's per-sample KL estimates (may be fewer than its rewards, or none).
        weight: the KL weight (0: the raw reward).

    Returns:
        (J, its standard error, how the error was computed, the per-prompt J values: empty
        unless computed per prompt). "per prompt" when every prompt with rewards has the same
        number (at least one) of KL samples; otherwise "sum of errors", se_reward + weight *
        se_KL, a bound whatever the correlation of reward and KL. J is NaN when a KL is needed
        but was not measured; the error is None where stats.mean_stderr has none (one value).
    """
    pairs = [(r, k) for r, k in zip(rewards, kls, strict=True) if r]
    counts = {len(k) for _, k in pairs}
    if weight == 0 or (len(counts) == 1 and 0 not in counts):
        values = [sum(r) / len(r) - (weight * sum(k) / len(k) if weight else 0.0)
                  for r, k in pairs]
        return (*stats.mean_stderr(values), "per prompt", values)
    reward, reward_stderr = stats.mean_stderr([sum(r) / len(r) for r, _ in pairs])
    kl, kl_stderr = stats.mean_stderr([v for _, k in pairs for v in k])
    stderr = (None if reward_stderr is None or kl_stderr is None
              else reward_stderr + weight * kl_stderr)
    return reward - weight * kl, stderr, "sum of errors", []


def make_pairs(prompts: list[str], samples: list, rewards: list[float],
               margin: float) -> list[dict[str, Any]]:
    """Best versus worst continuation of each prompt, kept when their rewards differ > margin."""
    by_prompt: dict[int, list[tuple[float, str]]] = {}
    for sample, reward in zip(samples, rewards, strict=True):
        by_prompt.setdefault(sample.prompt_index, []).append((reward, sample.text))
    pairs = []
    for index, scored in sorted(by_prompt.items()):
        if len(scored) < 2:
            continue
        best = max(scored, key=lambda item: item[0])
        worst = min(scored, key=lambda item: item[0])
        if best is worst:
            worst = scored[1] if scored[0] is best else scored[0]
        if best[0] - worst[0] > margin and best[1] != worst[1]:
            pairs.append({"prompt": prompts[index], "chosen": best[1], "rejected": worst[1],
                          "score_chosen": best[0], "score_rejected": worst[0]})
    return pairs


def kl_subset(samples: list, limit: int) -> list:
    """Up to `limit` samples (0: all), the first of every prompt before any second one."""
    if limit <= 0 or limit >= len(samples):
        return list(samples)
    rank: dict[int, int] = {}
    order = []
    for index, sample in enumerate(samples):
        rank[sample.prompt_index] = rank.get(sample.prompt_index, -1) + 1
        order.append((rank[sample.prompt_index], index))
    return [samples[index] for _, index in sorted(order)[:limit]]

"""sentiment: the paper's IMDb experiment in miniature, and the default task.

Prompts are short movie-review openings (made from templates, or cut from a dataset of reviews
the user names). Preference pairs come from the reference policy itself: sample several raw
continuations per training prompt through vLLM, score them with the sentiment scorer, and keep
the best and the worst as (chosen, rejected) when their scores differ by more than a margin.
Fitness is the mean reward of the policy's own samples on held-out prompts (each prompt's
samples averaged first, so the standard error is over prompts); KL(policy || reference) per
sequence (see kl.py) and the mean completion length are reported beside it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.models import model_identity
from selfdisco.paths import write_text_atomic
from selfdisco.tasks.base import Fitness, TaskContext, mean_and_stderr, preset_settings
from selfdisco.tasks.openings import Split, dataset_openings, split_openings, template_openings
from selfdisco.tasks.sampling import sample_completions, served_adapter
from selfdisco.tasks.scorers import make_scorer, scorer_label

# Part of the pairs' cache key (and the burn-in cache's): bump it when the way pairs are
# sampled or chosen changes.
PAIRS_VERSION = 1


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
    max_tokens: int = 24
    """Length of every sampled continuation, in tokens."""
    measure_kl: bool = True
    """Estimate KL(policy || reference) for adapters (two forward passes per scored sample)."""
    kl_samples: int = 64
    """Samples the KL is estimated from, one per opening first (0: all of them)."""
    concurrency: int = 8
    """Requests in flight to the server."""


PRESET_SETTINGS = {
    # The tiny random model writes noise that rarely carries sentiment: keep every pair, so the
    # loop can run end to end, and make the sets small.
    "smoke": SentimentSettings(train_prompts=16, pair_samples=2, margin=-1.0, eval_prompts=8,
                               eval_samples=2, max_tokens=12),
    "cpu": SentimentSettings(),
    "gpu-zephyr": SentimentSettings(train_prompts=1024, eval_prompts=200, eval_samples=4,
                                    max_tokens=48, concurrency=64),
}


class SentimentTask:
    """Positive-sentiment continuation of movie-review openings (see module docstring)."""

    name = "sentiment"
    kind = "preference"
    needs_judge = False
    description = "mean sentiment reward of policy samples on held-out review openings"
    pairs_version = PAIRS_VERSION

    def settings(self, ctx: TaskContext) -> SentimentSettings:
        return preset_settings(self.name, PRESET_SETTINGS, ctx)

    def check_options(self, preset: str, options: dict[str, Any]) -> None:
        """UserError for an unknown or mistyped option or an unknown scorer; reads nothing."""
        settings = self.settings(TaskContext(preset=preset, options=dict(options)))
        scorer_label(settings.scorer)

    def train_settings(self, preset: str) -> Any:
        """The preset's training recipe, with lengths cut to these short texts.

        On CPU the LoRA learning rate is raised to 1e-3 and beta to 0.1: with the preset's
        1e-4 and 0.05, 32 steps moved rho by under one nat and the policy's samples barely.
        """
        from selfdisco.train.settings import TrainSettings

        base = TrainSettings.for_preset(preset)
        if preset == "gpu-zephyr":
            return base.with_overrides(max_length=128, max_prompt_length=32)
        if preset == "cpu":
            base = base.with_overrides(learning_rate=1e-3, beta=0.1)
        return base.with_overrides(max_length=64, max_prompt_length=24)

    def openings(self, settings: SentimentSettings) -> Split:
        if settings.reviews:
            return dataset_openings(settings.reviews, column=settings.review_column,
                                    words=settings.opening_words, seed=settings.split_seed)
        return split_openings(template_openings(), seed=settings.split_seed)

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

    def evaluate(self, ctx: TaskContext, adapter_path: str | None = None) -> Fitness:
        """Mean reward of policy samples on held-out openings, with KL and length beside it."""
        settings = self.settings(ctx)
        client = ctx.require_client(self.name)
        prompts = self.openings(settings).held_out[:settings.eval_prompts]
        scorer = make_scorer(settings.scorer)
        started = time.perf_counter()
        with served_adapter(client, adapter_path) as model:
            samples = sample_completions(client, prompts, n=settings.eval_samples,
                                         max_tokens=settings.max_tokens, seed=ctx.seed + 7919,
                                         model=model, concurrency=settings.concurrency)
        sampled = time.perf_counter()
        rewards = scorer.score([s.text for s in samples])
        per_prompt: list[list[float]] = [[] for _ in prompts]
        for sample, reward in zip(samples, rewards, strict=True):
            per_prompt[sample.prompt_index].append(reward)
        value, stderr = mean_and_stderr([sum(r) / len(r) for r in per_prompt if r])
        metrics: dict[str, Any] = {
            "scorer": scorer.label,
            "policy": str(adapter_path) if adapter_path else "base model (the reference)",
            "prompts": len(prompts), "samples_per_prompt": settings.eval_samples,
            "mean_tokens": sum(len(s.token_ids) for s in samples) / max(len(samples), 1),
            "sampling_seconds": round(sampled - started, 2),
            "examples": [prompts[s.prompt_index] + s.text for s in samples[:3]],
        }
        if model is None:
            metrics.update(kl=0.0, kl_stderr=0.0)  # the base model is the reference
        elif settings.measure_kl:
            from selfdisco.tasks.kl import sequence_kls

            kl_started = time.perf_counter()
            scored = kl_subset(samples, settings.kl_samples)
            kl, kl_stderr = mean_and_stderr(sequence_kls(ctx.model_path, str(adapter_path),
                                                         scored, dtype=ctx.dtype))
            metrics.update(kl=kl, kl_stderr=kl_stderr, kl_dtype=ctx.dtype,
                           kl_n=len(scored), kl_seconds=round(time.perf_counter() - kl_started, 2))
        else:
            metrics.update(kl=math.nan, kl_stderr=math.nan)
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        return Fitness(value=value, stderr=stderr, metrics=metrics, n=len(per_prompt))


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

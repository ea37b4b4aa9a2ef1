"""Train and score an exported recipe again (`selfdisco train --from`), through the same worker
code a discovery run uses, and compare the fitness with the recorded one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

from selfdisco import stats
from selfdisco.discovery.evaluation import combine
from selfdisco.execution.records import Result
from selfdisco.execution.worker import evaluate
from selfdisco.export.recipe import Recipe
from selfdisco.rundir.events import SCORED


@dataclass(frozen=True)
class Reproduction:
    """A recipe trained and scored again.

    Attributes:
        result: over the recipe's training seeds, combined as the run combined them.
        recorded: the result the run recorded (None when the export has none).
        difference: result minus recorded, blocked by training seed and paired over the
            held-out prompts (stats.difference); None unless both scored.
    """

    result: Result
    recorded: Result | None
    difference: stats.BlockedDifference | None

    @property
    def within_stderr(self) -> bool | None:
        """Whether the fitness is within the recorded standard error of the recorded fitness."""
        if self.difference is None or self.recorded is None or self.recorded.stderr is None:
            return None
        return abs(self.result.fitness - self.recorded.fitness) <= self.recorded.stderr


def _row(result: Result, code: str) -> SimpleNamespace:
    """A result as stats reads a row."""
    return SimpleNamespace(fitness=result.fitness, stderr=result.stderr, code=code,
                           metrics=result.metrics)


def reproduce(recipe: Recipe, *, server_url: str, served_model: str, out_dir: Path,
              cache_dir: Path, ref_cache_dir: Path | None, judge_url: str = "",
              judge_model: str = "") -> Reproduction:
    """Train under the recipe's loss with each of its training seeds and score each policy with
    the task's settings, on the server at server_url (which serves the recipe's model).

    Args:
        recipe: from selfdisco.export.recipe (build_recipe or read_export); its pairs, when present,
            replace the task's own.
        server_url, served_model: the policy's server (LoRA enabled) and its model name.
        out_dir: receives each seed's adapter, logs and result (r<k>/ with several seeds).
        cache_dir: where the task caches preference pairs it makes.
        ref_cache_dir: the shared reference log-prob cache; None computes them every step.
        judge_url, judge_model: a judged task's judge (empty: the policy's server).
    """
    seeds = recipe.train_seeds
    results = []
    for k, seed in enumerate(seeds):
        job = replace(recipe.job(server_url=server_url, served_model=served_model,
                                 out_dir=Path(out_dir) / f"r{k}" if len(seeds) > 1 else out_dir,
                                 cache_dir=cache_dir, ref_cache_dir=ref_cache_dir,
                                 replicate=k),
                      judge_url=judge_url, judge_model=judge_model)
        Path(job.out_dir).mkdir(parents=True, exist_ok=True)
        results.append(replace(evaluate(job, pairs=recipe.pairs), replicate=k, train_seed=seed))
    result = combine(results, recipe.pooled_seed_variance)
    recorded = Result.from_dict(recipe.recorded) if recipe.recorded else None
    difference = None
    if recorded is not None and recorded.status == SCORED and result.status == SCORED:
        difference = stats.difference(_row(result, recipe.code), _row(recorded, recipe.code))
    return Reproduction(result, recorded, difference)

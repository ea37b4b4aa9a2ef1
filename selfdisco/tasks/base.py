"""What every task shares: its protocol, the context it runs in and the fitness it returns
(its statistics come from selfdisco.stats)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from selfdisco.errors import UserError
from selfdisco.formatting import format_fitness
from selfdisco.presets import DEFAULT_PRESET
from selfdisco.rundir.paths import checkpoints_dir


class EvaluationError(Exception):
    """The candidate failed while its fitness was measured (diverged, too slow, crashed).

    The message is one line, written to be shown to the proposer as "Training failed. Error: ...".
    """


@dataclass
class Fitness:
    """A task's score for one policy or loss, with its standard error and side metrics.

    value is NaN when nothing could be scored (n == 0); `ok` says whether it can be compared.
    stderr is None where it cannot be estimated (one prompt: stats.mean_stderr's rule).
    """

    value: float
    stderr: float | None
    metrics: dict[str, Any] = field(default_factory=dict)
    n: int = 0

    @property
    def ok(self) -> bool:
        return self.n > 0 and math.isfinite(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "stderr": self.stderr, "n": self.n, "metrics": self.metrics}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fitness:
        return cls(value=float(data["value"]), stderr=data.get("stderr"),
                   metrics=dict(data.get("metrics") or {}), n=int(data.get("n") or 0))

    def summary(self) -> str:
        """One line, e.g. "0.412 ± 0.031 (n=64)", or why there is no score."""
        if not self.ok:
            reason = self.metrics.get("no_score_reason")
            return f"no score (n={self.n}{': ' + reason if reason else ''})"
        return f"{format_fitness(self.value, self.stderr)} (n={self.n})"


@dataclass
class TaskContext:
    """Everything a task needs to run: where the models are served and where to cache.

    Attributes:
        client: an LLMClient for the server that serves the base model (the reference policy)
            and the adapters under evaluation. Not needed by digits.
        model_path: the base model's path (or Hugging Face id); keys the caches.
        cache_dir: where preference pairs and other reusable results are cached.
        seed: root seed for sampling and splits.
        preset: the run's preset (selfdisco.presets); picks the task's default sizes.
        judge_client: the LLMClient of the judge (mtbench); None means `client` is the judge.
        options: task-specific overrides (see each task's Settings dataclass).
        dtype: what the served policy computes in (float32, bfloat16, float16); log-probs for
            KL are computed in the same dtype, so samples and KL share their numerics.
    """

    client: Any = None
    model_path: str = ""
    cache_dir: Path = field(default_factory=lambda: checkpoints_dir() / "cache")
    seed: int = 0
    preset: str = DEFAULT_PRESET
    judge_client: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"

    def require_client(self, task: str) -> Any:
        if self.client is None:
            raise ValueError(f"the {task} task needs an LLM client (TaskContext.client)")
        return self.client


class Task(Protocol):
    """What every task declares and does (tasks are registered in selfdisco.tasks).

    Attributes:
        name: its registry name.
        kind: what a candidate loss trains, and on which data. "preference": a LoRA policy on
            the task's preference pairs (a PreferenceTask); "classification": a classifier on
            the task's own training data (a ClassificationTask). Discovery runs preference
            tasks.
        description: what its fitness measures, for the proposer's prompt.
        needs_judge: its fitness asks an LLM judge, so a run serves the judge model; such a
            task also has check_judge(preset, options, policy, judge) (see mtbench).
    """

    name: str
    kind: str
    description: str
    needs_judge: bool

    def check_options(self, preset: str, options: dict[str, Any]) -> None:
        """UserError for an unknown or mistyped option; reads nothing."""

    def score(self, ctx: TaskContext, adapter_path: str | None = None) -> Fitness:
        """The fitness of the base policy or of base + adapter (classification: the
        cross-entropy baseline)."""


@runtime_checkable
class PreferenceTask(Task, Protocol):
    """A task whose candidate loss trains a LoRA policy on preference pairs."""

    pairs_version: int  # bumped when the way its pairs are made changes (keys caches)

    def train_settings(self, recipe: str) -> Any:
        """The training recipe of this name, a preset's (config train.recipe), as a
        selfdisco.train.TrainSettings."""

    def preference_data(self, ctx: TaskContext) -> Any:
        """Pairs {prompt, chosen, rejected}: a list of dicts or a datasets.Dataset."""


@runtime_checkable
class ClassificationTask(Task, Protocol):
    """A task whose candidate loss, fn(logits, targets), trains a classifier on its own data."""

    def evaluate_loss(self, ctx: TaskContext, loss: Callable | str) -> Fitness:
        """The fitness of a loss: a callable, or candidate code defining one."""


# A task's kind -> the protocol it follows.
KINDS: dict[str, type] = {"preference": PreferenceTask, "classification": ClassificationTask}


def preset_settings(task: str, presets: dict[str, Any], ctx: TaskContext) -> Any:
    """The settings of the context's preset (or a `preset` option), with the other options on."""
    options = dict(ctx.options)
    preset = options.pop("preset", ctx.preset)
    if preset not in presets:
        raise UserError(f"unknown preset {preset!r} for the {task} task; choose one of "
                        f"{', '.join(presets)}")
    return apply_options(presets[preset], options)


def train_recipe(task: str, recipes: dict[str, Any], name: str) -> Any:
    """A copy of the task's training recipe of this name (TrainSettings); UserError naming the
    task's recipes otherwise."""
    if name not in recipes:
        raise UserError(f"unknown training recipe {name!r} for the {task} task; choose one of "
                        f"{', '.join(recipes)}")
    return dataclasses.replace(recipes[name])


def apply_options(settings: Any, options: dict[str, Any]) -> Any:
    """A copy of a settings dataclass with `options` applied; unknown keys are a UserError."""
    known = {f.name: f for f in dataclasses.fields(settings)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"unknown task option(s) {', '.join(unknown)}; known: {', '.join(known)}"
                        ", preset")
    changes = {}
    for key, raw in options.items():
        current = getattr(settings, key)
        changes[key] = _coerce(raw, current, key)
    return dataclasses.replace(settings, **changes)


def _coerce(raw: Any, current: Any, key: str) -> Any:
    """Turn a command-line string into the type of the field's current value; a value of
    another type is a UserError naming the option and the type it needs."""
    if current is None:
        return raw
    if not isinstance(raw, str):
        wanted = type(current)
        fits = isinstance(raw, wanted) and not (isinstance(raw, bool) and wanted is not bool)
        if wanted is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if not fits:
            hint = f" (quote it: --set 'task.options.{key}=\"{raw}\"')" if wanted is str else ""
            raise UserError(f"task option {key}={raw!r}: expected a {wanted.__name__}{hint}")
        return raw
    if isinstance(current, str):
        return raw
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
    except ValueError:
        raise UserError(f"task option {key}={raw!r}: expected a {type(current).__name__}") from None
    return raw

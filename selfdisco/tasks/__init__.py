"""The task registry: each task is preference data + a training recipe + a fitness.

Tasks are registered by name with lazy "module:attr" targets, so importing this package
imports no task module (and no heavy library); `get_task(name)` resolves the target on first use.

A preference task (sentiment, mtbench) has `kind == "preference"`, `preference_data(ctx)`,
`pairs_version` (bumped when the way its pairs are made changes), `train_settings(preset)` and
`evaluate(ctx, adapter_path=None) -> Fitness`. A classification task (digits) has
`kind == "classification"` and `evaluate_loss(ctx, loss) -> Fitness`, where the loss is a
function of (logits, targets); its `evaluate` measures cross-entropy. Every task has
`check_options(preset, options)`: a cheap check that raises UserError for an unknown or
mistyped option.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from selfdisco.errors import UserError
from selfdisco.tasks.base import EvaluationError, Fitness, TaskContext

__all__ = ["DEFAULT_TASK", "EvaluationError", "Fitness", "TaskContext", "get_task", "task_names"]

DEFAULT_TASK = "sentiment"

# Task name -> "module:attr" of a zero-argument factory or a Task instance.
REGISTRY: dict[str, str] = {
    "sentiment": "selfdisco.tasks.sentiment:SentimentTask",
    "mtbench": "selfdisco.tasks.mtbench:MTBenchTask",
    "digits": "selfdisco.tasks.digits:DigitsTask",
}

_resolved: dict[str, Any] = {}


def task_names() -> list[str]:
    return list(REGISTRY)


def register(name: str, target: str) -> None:
    """Add (or replace) a task under `name`; `target` is "module:attr"."""
    if ":" not in target:
        raise ValueError(f"task target {target!r} must look like 'package.module:attr'")
    REGISTRY[name] = target
    _resolved.pop(name, None)


def get_task(name: str) -> Any:
    """The task registered under `name`, created on first use."""
    if name not in REGISTRY:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(REGISTRY)}")
    if name not in _resolved:
        module_name, attr = REGISTRY[name].split(":", 1)
        target = getattr(importlib.import_module(module_name), attr)
        made = inspect.isclass(target) or inspect.isfunction(target)
        _resolved[name] = target() if made else target
    return _resolved[name]

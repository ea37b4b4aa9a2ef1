"""The task registry: each task is preference data + a training recipe + a fitness.

Tasks are registered by name with lazy "module:attr" targets (TASKS), so importing this package
imports no task module (and no heavy library); `get_task(name)` resolves the target on first use
and checks that the task follows the protocol its `kind` names (selfdisco.tasks.base: Task,
PreferenceTask, ClassificationTask). Adding a task is a module and a line in TASKS.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from selfdisco.config import RunConfig, load_config
from selfdisco.errors import UserError
from selfdisco.registry import Registry
from selfdisco.rundir.archive import Archive
from selfdisco.tasks.base import KINDS, EvaluationError, Fitness, Task, TaskContext
from selfdisco.train.settings import TrainSettings

__all__ = ["DEFAULT_TASK", "EvaluationError", "Fitness", "Task", "TaskContext", "get_task",
           "preset_training", "run_train_settings", "task_names"]

DEFAULT_TASK = "sentiment"

# Task name -> "module:attr" of a zero-argument factory or a Task instance.
TASKS = Registry("task", {
    "sentiment": "selfdisco.tasks.sentiment:SentimentTask",
    "mtbench": "selfdisco.tasks.mtbench:MTBenchTask",
    "digits": "selfdisco.tasks.digits.task:DigitsTask",
})

_made: dict[str, Task] = {}


def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str) -> Task:
    """The task registered under `name`, created on first use; UserError for an unknown name."""
    if name not in _made:
        target = TASKS.load(name)
        task = target() if inspect.isclass(target) or inspect.isfunction(target) else target
        protocol = KINDS.get(getattr(task, "kind", None))
        if protocol is None or not isinstance(task, protocol):
            raise TypeError(f"task {name!r} ({TASKS.targets[name]}) must declare a kind, one of "
                            f"{', '.join(KINDS)}, and the members of that kind's protocol "
                            "(selfdisco/tasks/base.py)")
        _made[name] = task
    return _made[name]


def recorded_options(name: str, options: dict[str, Any],
                     recorded: list[dict]) -> dict[str, Any]:
    """`options` with what a run's recorded evaluations (their metrics) fix, by the task's
    recorded_options hook (the split or the fitness version they were scored under), so that a
    resumed run, its held-out scoring and its export score as it did."""
    hook = getattr(get_task(name), "recorded_options", None)
    return {**options, **(hook(dict(options), recorded) if hook else {})}


def recorded_task_options(config: RunConfig, run_dir: Path) -> dict[str, Any]:
    """The run's task options with what its scored evaluations fix (recorded_options)."""
    archive = Archive(run_dir)
    try:
        recorded = [r.metrics for r in archive.rows() if r.fitness is not None]
    finally:
        archive.close()
    return recorded_options(config.task.name, dict(config.task.options), recorded)


def run_train_settings(config: RunConfig) -> TrainSettings:
    """The training settings a run trains with: its task's recipe of the config's train.recipe
    with the config's overrides on (UserError when an override is unknown, mistyped or out of
    range, or the task trains no adapter)."""
    task = get_task(config.task.name)
    if task.kind != "preference":
        usable = [name for name in task_names() if get_task(name).kind == "preference"]
        raise UserError(f"the {task.name} task trains {task.kind} losses on its own data, not "
                        f"LoRA adapters on preference pairs; choose one of {', '.join(usable)}")
    recipe = task.train_settings(config.train.recipe)
    try:
        recipe = recipe.with_overrides(**config.train.overrides)
    except UserError as err:
        raise UserError(f"train.overrides: {err}; change it in the config file or with --set "
                        "train.overrides.NAME=VALUE") from None
    return recipe.with_overrides(report_to=config.train.report_to) if config.train.report_to \
        else recipe


def preset_training(preset: str, task: str | None = None) -> tuple[RunConfig, TrainSettings]:
    """What discovery trains a candidate with on a preset: the preset's config (with `task` as
    its task when given) and run_train_settings of it. `selfdisco train` and the API's
    train_loss train with this.

    Raises:
        UserError: an unknown preset or task, or a task that trains no adapter.
    """
    config = load_config(preset, overrides={"task": {"name": task}} if task else None)
    return config, run_train_settings(config)

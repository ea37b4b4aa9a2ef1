"""The task registry: each task is preference data + a training recipe + a fitness.

Tasks are registered by name with lazy "module:attr" targets (TASKS), so importing this package
imports no task module (and no heavy library); `get_task(name)` resolves the target on first use
and checks that the task follows the protocol its `kind` names (selfdisco.tasks.base: Task,
PreferenceTask, ClassificationTask). Adding a task is a module and a line in TASKS.
"""

from __future__ import annotations

import inspect

from selfdisco.config import RunConfig
from selfdisco.errors import UserError
from selfdisco.registry import Registry
from selfdisco.tasks.base import KINDS, EvaluationError, Fitness, Task, TaskContext
from selfdisco.train.settings import TrainSettings

__all__ = ["DEFAULT_TASK", "EvaluationError", "Fitness", "Task", "TaskContext", "get_task",
           "run_train_settings", "task_names"]

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


def run_train_settings(config: RunConfig) -> TrainSettings:
    """The training settings a run trains with: its task's recipe for the training preset with
    the config's overrides on (UserError when an override is unknown, mistyped or out of range)."""
    recipe = get_task(config.task.name).train_settings(config.train.preset)
    try:
        recipe = recipe.with_overrides(**config.train.overrides)
    except UserError as err:
        raise UserError(f"train.overrides: {err}; change it in the config file or with --set "
                        "train.overrides.NAME=VALUE") from None
    return recipe.with_overrides(report_to=config.train.report_to) if config.train.report_to \
        else recipe

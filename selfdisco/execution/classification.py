"""Evaluating classification losses (digits) for the discovery loop.

Each evaluation runs in a child of a confined sandbox server that has imported torch once
(selfdisco.tasks.digits.task.Evaluations): a crash or a hang ends only that child and the
candidate gets a failed Result, as with the preference tasks' workers, and nothing a candidate
changes in memory reaches the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from selfdisco.execution.records import Result
from selfdisco.rundir.events import SCORED
from selfdisco.seeds import replicate_seed
from selfdisco.tasks.digits.task import Evaluations


def result_of(evaluation: dict, fidelity: float) -> Result:
    """A Result from Evaluations.run's dict."""
    if not evaluation.get("ok"):
        return Result.failed(evaluation.get("cause") or "error",
                             evaluation.get("reason") or "the evaluation failed")
    fitness = evaluation["fitness"]
    metrics = dict(fitness.get("metrics") or {})
    return Result(status=SCORED, fitness=fitness["value"], stderr=fitness.get("stderr"),
                  metrics={**metrics, "n": fitness.get("n"), "fidelity": fidelity},
                  timings={"train": metrics.get("seconds")})


class ClassificationEvaluator:
    """The loop's evaluator for the digits task (evaluate() as WorkerEvaluator's)."""

    def __init__(self, options: dict, train_seed: int, timeout_s: float = 120.0):
        self.options = dict(options)
        self.train_seed = train_seed
        self.evaluations = Evaluations(timeout_s)
        self.steps = 0  # training steps spent, all evaluations together

    def evaluate(self, rows, on_progress: Callable, on_done: Callable,
                 on_start: Callable | None = None, replicates: dict | None = None,
                 fidelity: float = 1.0) -> None:
        for row in rows:
            for k in replicates.get(row.id, [0]) if replicates else [None]:
                if on_start:
                    on_start(row)
                seed = replicate_seed(self.train_seed, k or 0)
                result = result_of(self.evaluations.run(row.code, self.options, seed, fidelity),
                                   fidelity)
                steps = result.metrics.get("steps", 0)
                self.steps += steps
                on_progress(row, {"step": steps, "total": steps, "loss": None})
                if k is not None:
                    result = replace(result, replicate=k, train_seed=seed)
                on_done(row, result)

    def close(self) -> None:
        """Stop the sandbox server (its children with it)."""
        self.evaluations.close()

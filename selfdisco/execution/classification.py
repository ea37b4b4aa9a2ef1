"""Evaluating classification losses (digits): each in a worker process that imports torch once.

A digits evaluation takes about a quarter of a second, so a fresh process per candidate (about
3 s to import torch) would cost ten times the evaluation. One spawned worker process evaluates
the jobs one after another; a crash or a hang kills only that process (a new one starts), and
the candidate gets a failed Result, as with the preference tasks' workers.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace

from selfdisco.execution.records import Result
from selfdisco.rundir.events import SCORED
from selfdisco.seeds import replicate_seed
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.base import EvaluationError
from selfdisco.tasks.digits.task import Diverged, compile_classification_loss, train_and_score


def evaluate_job(code: str | None, options: dict, seed: int, fidelity: float) -> dict:
    """One evaluation as a Result dict: `code` trained for `fidelity` of the task's epochs (no
    code: the untrained network). Runs in the worker process."""
    task = get_task("digits")
    settings = task.settings(TaskContext(options=dict(options)))
    epochs = 0 if code is None else max(1, math.ceil(settings.epochs * fidelity))
    settings = replace(settings, epochs=epochs)
    started = time.perf_counter()
    try:
        loss_fn = compile_classification_loss(code) if code is not None else None
        fitness = train_and_score(loss_fn, settings, seed=seed)
    except Diverged as err:
        return Result.failed("diverged", str(err)).to_dict()
    except EvaluationError as err:
        return Result.failed("candidate", str(err)).to_dict()
    seconds = round(time.perf_counter() - started, 3)
    return Result(status=SCORED, fitness=fitness.value, stderr=fitness.stderr,
                  metrics={**fitness.metrics, "n": fitness.n, "fidelity": fidelity},
                  timings={"train": seconds}).to_dict()


class ClassificationEvaluator:
    """The loop's evaluator for the digits task (evaluate() as WorkerEvaluator's)."""

    def __init__(self, options: dict, train_seed: int, timeout_s: float = 120.0):
        self.options = dict(options)
        self.train_seed = train_seed
        self.timeout_s = timeout_s
        self.pool: ProcessPoolExecutor | None = None
        self.steps = 0  # training steps spent, all evaluations together

    def evaluate(self, rows, on_progress: Callable, on_done: Callable,
                 on_start: Callable | None = None, replicates: dict | None = None,
                 fidelity: float = 1.0) -> None:
        for row in rows:
            for k in replicates.get(row.id, [0]) if replicates else [None]:
                if on_start:
                    on_start(row)
                seed = replicate_seed(self.train_seed, k or 0)
                result = Result.from_dict(self._run(row.code, seed, fidelity))
                steps = result.metrics.get("steps", 0)
                self.steps += steps
                on_progress(row, {"step": steps, "total": steps, "loss": None})
                if k is not None:
                    result = replace(result, replicate=k, train_seed=seed)
                on_done(row, result)

    def _run(self, code: str | None, seed: int, fidelity: float) -> dict:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        future = self.pool.submit(evaluate_job, code, self.options, seed, fidelity)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            self.close()
            return Result.failed("timeout", f"the evaluation ran past {self.timeout_s:g} s"
                                 ).to_dict()
        except BrokenExecutor:
            self.close()
            return Result.failed("killed", "the evaluation process died without a result"
                                 ).to_dict()

    def close(self) -> None:
        """Stop the worker process (killed: it may be stuck in a candidate's loop)."""
        if self.pool is None:
            return
        for process in list(getattr(self.pool, "_processes", {}).values()):
            process.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None

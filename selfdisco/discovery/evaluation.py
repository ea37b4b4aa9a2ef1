"""Turning archive rows into Results: live evaluation in worker processes, or a recorded run's.

WorkerEvaluator writes candidates/<id>/job.json and runs the worker through an executor.
RecordedEvaluator answers from another run's archive, matched by code, so a recorded run can be
replayed with no model at all.

With discovery.replicates = R > 1 each candidate is one job per training seed (replicate k in
candidates/<id>/r<k>/, trained with replicate_seed(train_seed, k)); `combine` folds the
per-seed results into the candidate's own.

The trajectory check (same_training_as): a candidate trained on the same seed and pairs as a
recorded row, whose per-prompt scores and rho statistics equal that row's within float noise,
trained the same; the loop records it a duplicate of that row and trains it no further.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from selfdisco import stats
from selfdisco.execution.executors import JOB_FILE, Executor
from selfdisco.execution.records import Job, Result
from selfdisco.rundir.archive import Archive, Row
from selfdisco.rundir.events import REJECTED, SCORED
from selfdisco.seeds import replicate_seed

Progress = Callable[[Row, dict], None]
Done = Callable[[Row, Result], None]
Start = Callable[[Row], None]
Replicates = dict[str, list[int]] | None  # row id -> replicates to run; None: each row once
# Relative difference within which two trainings' figures are equal: float noise. Identical
# trainings on one machine give identical numbers (the sentiment task rounds per-prompt scores
# to 6 digits), so this only forgives the last bits of a float written and read back.
SAME_TRAINING = 1e-9
# The training's trace that must match too: the last step's rho statistics (train/trainer.py).
RHO_TRACE = ("rho/mean", "rho/std", "rho/min", "rho/max")


def code_sha(code: str | None) -> str | None:
    return hashlib.sha256(code.encode()).hexdigest()[:16] if code is not None else None


class WorkerEvaluator:
    """Each row becomes `template` filled in for its candidate, run by the executor."""

    def __init__(self, run_dir: Path, template: Job, executor: Executor,
                 timeout_s: float):
        self.run_dir = Path(run_dir)
        self.template = template
        self.executor = executor
        self.timeout_s = timeout_s

    def evaluate(self, rows: list[Row], on_progress: Progress, on_done: Done,
                 on_start: Start | None = None, replicates: Replicates = None,
                 fidelity: float = 1.0) -> None:
        """fidelity < 1: multi-fidelity's cheap stage, in candidates/<id>/cheap/."""
        by_dir: dict[Path, tuple[Row, Job]] = {}
        for row in rows:
            for k in replicates.get(row.id, [0]) if replicates else [None]:
                job_dir = self.run_dir / "candidates" / row.id / (
                    "cheap" if fidelity < 1 else f"r{k}" if k is not None else "")
                job_dir.mkdir(parents=True, exist_ok=True)
                seed = replicate_seed(self.template.train_seed, k or 0)
                job = self.template.for_candidate(row.id, row.name or row.id, row.code,
                                                  str(job_dir), replicate=k or 0,
                                                  train_seed=seed)
                job = replace(job, fidelity=fidelity)
                (job_dir / JOB_FILE).write_text(json.dumps(job.to_dict(), indent=2))
                by_dir[job_dir] = (row, job)

        def done(job_dir: Path, result: Result) -> None:
            row, job = by_dir[job_dir]
            if replicates:
                result = replace(result, replicate=job.replicate, train_seed=job.train_seed)
            on_done(row, result)

        self.executor.map(list(by_dir), self.timeout_s,
                          on_progress=lambda d, p: on_progress(by_dir[d][0], p),
                          on_done=done,
                          on_start=(lambda d: on_start(by_dir[d][0])) if on_start else None)


class RecordedEvaluator:
    """Results of a recorded run, looked up by kind and code (and replicate, per seed)."""

    def __init__(self, source_run: Path):
        archive = Archive(source_run)
        self.results: dict[tuple, Result] = {}
        self.stages: dict[tuple, Result] = {}  # (kind, code sha, fidelity) -> cheap result
        rows, stages = archive.rows(), archive.stages()
        for row in rows:
            for entry in stages.get(row.id, {}).values():
                self.stages.setdefault((row.kind, code_sha(row.code), entry["fidelity"]),
                                       replace(Result.from_dict(entry["result"]),
                                               replayed_from=row.id))
        for row in rows:
            key = (row.kind, code_sha(row.code))
            # a duplicate found in training (rejected) has the per-seed results it measured
            per_seed = (archive.replicates(row.id) if row.evaluated or row.status == REJECTED
                        else {})
            if row.evaluated:
                self.results.setdefault(key, replace(Result.from_row(row), replayed_from=row.id))
            elif 0 in per_seed:
                self.results.setdefault(key, replace(Result.from_dict(per_seed[0]),
                                                     replicate=None, train_seed=None,
                                                     replayed_from=row.id))
            for k, data in per_seed.items():
                self.results.setdefault((*key, k), replace(Result.from_dict(data),
                                                           replayed_from=row.id))
        archive.close()

    def evaluate(self, rows: list[Row], on_progress: Progress, on_done: Done,
                 on_start: Start | None = None, replicates: Replicates = None,
                 fidelity: float = 1.0) -> None:
        for row in rows:
            key = (row.kind, code_sha(row.code))
            if fidelity < 1:
                if on_start:
                    on_start(row)
                on_done(row, self.stages.get((*key, fidelity)) or Result.failed(
                    "not_recorded", "not evaluated at this fidelity in the recorded run"))
                continue
            for k in replicates.get(row.id, [0]) if replicates else [None]:
                if on_start:
                    on_start(row)
                result = self.results.get(key if k is None else (*key, k))
                if result is None:
                    result = Result.failed("not_recorded", "not evaluated in the recorded run")
                on_done(row, result if k is None else replace(result, replicate=k))


def same_training_as(result: Result, recorded: list[tuple[str, dict | None]]) -> str | None:
    """The id of the first recorded result that trained the same as `result` on the same seed
    and pairs: both scored, their per-prompt scores and the rho statistics of their last
    training step equal within SAME_TRAINING. A result without either never matches: per-prompt
    scores alone can agree between losses that train apart when they take few values (the
    digits task's right or wrong per example, which logs no rho).

    Args:
        result: a candidate's result on one training seed.
        recorded: (row id, its result on that seed as a Result dict, or None), in row order.
    """
    mine = _trace(result.to_dict())
    if mine is None:
        return None
    for id, data in recorded:
        if data is None:
            continue
        seeds = (data.get("train_seed"), result.train_seed)  # None: the replicate's, unnamed
        if None not in seeds and seeds[0] != seeds[1]:
            continue
        theirs = _trace(data)
        if theirs is not None and len(theirs) == len(mine) and all(
                math.isclose(a, b, rel_tol=SAME_TRAINING, abs_tol=1e-12)
                for a, b in zip(mine, theirs, strict=True)):
            return id
    return None


def twin_on_seed(archive: Archive, row: Row, k: int, result: Result) -> str | None:
    """The first other row, not itself a duplicate, whose training seed k trained the same as
    `result`, row's on that seed (replicate k of every row trains with one seed on the run's
    pairs); None when none did."""
    others = archive.rows("code IS NOT NULL AND id != ? AND status != ?", (row.id, REJECTED))
    return same_training_as(result, [(other.id, archive.replicates(other.id).get(k))
                                     for other in others])


def twin_at_stage(archive: Archive, row: Row, stage: str) -> str | None:
    """The first earlier row, not itself a duplicate, whose result at multi-fidelity's `stage`
    (one seed, the same share of the training for every loss) trained the same as row's."""
    entry = archive.stage(row.id, stage)
    others = archive.rows("seq < ? AND status != ?", (row.seq, REJECTED))
    recorded = [(other.id, e["result"]) for other in others
                if (e := archive.stage(other.id, stage)) and e["fidelity"] == entry["fidelity"]]
    return same_training_as(Result.from_dict(entry["result"]), recorded)


def _trace(data: dict) -> list[float] | None:
    """A scored result's per-prompt scores and last rho statistics in one list, or None."""
    metrics = data.get("metrics") or {}
    scores, train = metrics.get("per_prompt"), metrics.get("train") or {}
    if data.get("status") != SCORED or not isinstance(scores, list) or not scores or any(
            not isinstance(train.get(key), int | float) for key in RHO_TRACE):
        return None
    try:
        return [float(x) for x in scores] + [float(train[key]) for key in RHO_TRACE]
    except (TypeError, ValueError):
        return None


def combine(results: list[Result], pooled: float | None) -> Result:
    """A candidate's result from its per-seed results (in replicate order): the first failure
    if one did not score; else the mean fitness, a standard error with the seed variance
    (stats.replicate_stderr; `pooled` is the run's pooled seed variance), per-prompt scores and
    numeric metrics averaged over seeds, and each seed's figures in metrics["replicates"] (its
    per-prompt scores too: stats.seed_blocked_difference reads them seed by seed)."""
    failed = next((r for r in results if r.status != SCORED), None)
    if failed is not None or len(results) == 1:
        first = failed or results[0]
        reason = first.reason
        if failed is not None and len(results) > 1:
            reason = f"training seed {failed.replicate}: {failed.reason}"
        return replace(first, replicate=None, train_seed=None, reason=reason)
    pairs = [(float(r.fitness), r.stderr) for r in results]
    metrics = _mean_metrics([r.metrics for r in results])
    metrics["replicates"] = [
        {"replicate": r.replicate, "train_seed": r.train_seed, "fitness": r.fitness,
         "stderr": r.stderr, **({"kl": r.metrics["kl"]} if "kl" in r.metrics else {}),
         **({"per_prompt": r.metrics["per_prompt"]}
            if isinstance(r.metrics.get("per_prompt"), list) else {})}
        for r in results]
    metrics["seed_variance"] = stats.seed_variance_source(len(results), pooled)
    timings: dict[str, float] = {}
    for r in results:
        for stage, seconds in r.timings.items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 2)
    cached = [r.cached_from for r in results]
    return Result(status=SCORED, fitness=stats.mean([f for f, _ in pairs]),
                  stderr=stats.replicate_stderr(pairs, pooled,
                                                [r.metrics.get("per_prompt") for r in results]),
                  metrics=metrics,
                  timings=timings, adapter=results[0].adapter,
                  cached_from=cached[0] if all(cached) else None)


def _mean_metrics(all_metrics: list[dict]) -> dict:
    """The first seed's metrics, with every number that differs between seeds averaged and
    per_prompt averaged prompt by prompt."""
    metrics = dict(all_metrics[0])
    for key in list(metrics):
        values = [m.get(key) for m in all_metrics]
        if key == "per_prompt":
            lists = [v for v in values if isinstance(v, list)]
            if len(lists) == len(values) and len({len(v) for v in lists}) == 1:
                metrics[key] = [stats.mean(column) for column in zip(*lists, strict=True)]
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values) \
                and len(set(values)) > 1:
            metrics[key] = stats.mean(values)
    return metrics

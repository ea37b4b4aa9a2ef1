"""Evaluate one candidate in its own process: train a LoRA adapter under its loss, then score it.

Run as `python -m selfdisco.execution.worker JOB.json`. The job file says what to do; the worker
writes progress.jsonl while it trains and result.json when it ends, both beside the job file.
Whatever happens to the candidate (NaN, a crash in its code, a task error, a failing model server)
ends up in result.json as a Result (execution/records.py): a status, a cause and a one-line reason;
only a kill leaves no result, and the parent reports that.
"""

from __future__ import annotations

import ctypes
import json
import math
import signal
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from selfdisco.errors import one_line
from selfdisco.execution.records import PROGRESS_FILE, RESULT_FILE, Job, Result
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMClient, LLMError
from selfdisco.llm.server import ServerError
from selfdisco.llm.topology import asleep
from selfdisco.losses import Candidate
from selfdisco.rundir.events import SCORED
from selfdisco.rundir.paths import write_text_atomic
from selfdisco.tasks import EvaluationError, TaskContext, get_task
from selfdisco.train.result import TRAIN_DIVERGED
from selfdisco.train.tracking import log_summary


def failure_cause(err: BaseException) -> str:
    """Which of records.CAUSES an exception that ended an evaluation stands for."""
    if isinstance(err, LLMError | ServerError | httpx.HTTPError):
        return "server"
    if isinstance(err, EvaluationError):
        return "candidate"
    return "error"


def _task_context(job: Job, client: Any) -> Any:
    return TaskContext(client=client, model_path=job.model_path, cache_dir=Path(job.cache_dir),
                       seed=job.task_seed, preset=job.task_preset,
                       options=dict(job.task_options), dtype=job.dtype)


def _server_asleep(job: Job):
    """On a GPU it shares, the model server sleeps (frees GPU memory) while this worker trains
    (and while any other worker does; it wakes after the last one)."""
    return asleep(job.sleep_url, job.served_model)


def evaluate(job: Job, pairs: Any = None) -> Result:
    """Train (unless the job is the untrained base) and score; returns the result record.
    `pairs` replaces the task's preference pairs (an exported recipe's)."""
    out_dir = Path(job.out_dir)
    timings: dict[str, float] = {}
    task = get_task(job.task)
    client = LLMClient(job.server_url, job.served_model, recorder=Recorder(out_dir / "llm"),
                       timeout_s=job.request_timeout_s)
    ctx = _task_context(job, client)
    if job.judge_url:
        ctx.judge_client = LLMClient(job.judge_url, job.judge_model,
                                     recorder=Recorder(out_dir / "llm"),
                                     timeout_s=job.request_timeout_s,
                                     api_key_env=job.judge_api_key_env,
                                     structured=job.judge_structured)
    adapter = None
    train_metrics: dict = {}
    if job.code is not None:
        # lazy: loads torch, transformers
        from selfdisco.train.adapter import train_adapter

        started = time.perf_counter()
        data = task.preference_data(ctx) if pairs is None else pairs
        timings["data"] = round(time.perf_counter() - started, 2)
        progress_path = out_dir / PROGRESS_FILE

        def progress(step: int, total: int, logs: dict) -> None:
            with open(progress_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, "total": total,
                                         "loss": logs.get("loss")}) + "\n")

        candidate = Candidate(thought="", name=job.name, code=job.code)
        settings = job.train_settings
        if job.fidelity < 1:  # a cheap stage: a share of the steps (search/fidelity.py)
            settings = replace(settings, max_steps=max(1, math.ceil(settings.max_steps
                                                                    * job.fidelity)))
        started = time.perf_counter()
        with _server_asleep(job):
            trained = train_adapter(model_path=job.model_path, data=data,
                                    settings=settings, out_dir=out_dir,
                                    candidate=candidate, ref_cache_dir=job.ref_cache_dir or None,
                                    seed=job.train_seed, progress=progress)
        timings["train"] = round(time.perf_counter() - started, 2)
        train_metrics = dict(trained.metrics or {})
        train_metrics.update(seconds_per_step=trained.seconds_per_step,
                             peak_rss_mb=trained.peak_rss_mb, steps=trained.steps_done)
        if not trained.ok:
            cause = "diverged" if trained.status == TRAIN_DIVERGED else "candidate"
            return Result.failed(cause, trained.error or trained.status,
                                 step=trained.steps_done, metrics={"train": train_metrics},
                                 timings=timings)
        adapter = str(trained.adapter_path)
    started = time.perf_counter()
    if job.fidelity < 1:
        fewer_prompts(task, ctx, job.fidelity)
    fitness = task.score(ctx, adapter_path=adapter)
    timings["score"] = round(time.perf_counter() - started, 2)
    metrics = {**fitness.metrics, "n": fitness.n}
    if train_metrics:
        metrics["train"] = train_metrics
    if not fitness.ok:
        return Result.failed("task", f"the task could not score the policy "
                             f"({fitness.summary()})", metrics=metrics, timings=timings,
                             adapter=adapter)
    return Result(status=SCORED, fitness=fitness.value, stderr=fitness.stderr,
                  metrics=metrics, timings=timings, adapter=adapter)


def track(job: Job, result: Result) -> None:
    """The result as the summary of the job's experiment trackers (train.report_to); a tracker
    that fails is reported on stderr and changes no result."""
    try:
        log_summary(job.train_settings.report_to, job.out_dir, name=job.id or job.name,
                    status=result.status, fitness=result.fitness, stderr=result.stderr,
                    metrics=result.metrics)
    except Exception as err:  # noqa: BLE001 - tracking must never fail a candidate
        print(f"experiment tracker summary failed: {one_line(err)}", file=sys.stderr)


def fewer_prompts(task: Any, ctx: Any, fidelity: float) -> None:
    """A cheap stage (search/fidelity.py) scores on the first `fidelity` of the task's
    evaluation prompts (at least 4), a subset of the full stage's; a task without an
    eval_prompts setting scores as usual."""
    count = getattr(task.settings(ctx), "eval_prompts", None) if hasattr(task, "settings") \
        else None
    if isinstance(count, int):
        ctx.options["eval_prompts"] = max(4, math.ceil(count * fidelity))


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the process that started this worker dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    job_path = Path(argv[0])
    try:
        job = Job.from_dict(json.loads(job_path.read_text()))
        result = evaluate(job)
    except Exception as err:  # noqa: BLE001 - any failure of a candidate is a result
        result = Result.failed(failure_cause(err), one_line(err),
                               traceback=traceback.format_exc()[-4000:])
    else:
        track(job, result)
    write_text_atomic(job_path.parent / RESULT_FILE,
                      json.dumps(result.to_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Evaluate one candidate in its own process: train a LoRA adapter under its loss, then score it.

Run as `python -m selfdisco.worker JOB.json`. The job file says what to do; the worker writes
progress.jsonl while it trains and result.json when it ends, both beside the job file. Whatever
happens to the candidate (NaN, a crash in its code, a task error) ends up in result.json as a
status and a one-line reason; only a kill leaves no result, and the parent reports that.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selfdisco.paths import write_text_atomic

RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.jsonl"


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def _task_context(job: dict, client: Any) -> Any:
    from selfdisco.tasks import TaskContext

    return TaskContext(client=client, model_path=job["model_path"],
                       cache_dir=Path(job["cache_dir"]), seed=job["task_seed"],
                       preset=job["task_preset"],
                       options=dict(job.get("task_options") or {}),
                       dtype=job.get("dtype", "float32"))


@contextmanager
def _server_asleep(job: dict):
    """On one GPU, the model server sleeps (frees GPU memory) while this worker trains."""
    root = job.get("sleep_url")
    if not root:
        yield
        return
    import httpx

    httpx.post(f"{root}/sleep", params={"level": 1}, timeout=300).raise_for_status()
    try:
        yield
    finally:
        httpx.post(f"{root}/wake_up", timeout=300).raise_for_status()


def evaluate(job: dict) -> dict:
    """Train (unless the job is the untrained base) and score; returns the result record."""
    from selfdisco.llm.cache import Recorder
    from selfdisco.llm.client import LLMClient
    from selfdisco.tasks import get_task

    out_dir = Path(job["out_dir"])
    timings: dict[str, float] = {}
    task = get_task(job["task"])
    client = LLMClient(job["server_url"], job["served_model"],
                       recorder=Recorder(out_dir / "llm"),
                       timeout_s=job.get("request_timeout_s", 600))
    ctx = _task_context(job, client)
    if job.get("judge_url"):
        ctx.judge_client = LLMClient(job["judge_url"], job["judge_model"],
                                     recorder=Recorder(out_dir / "llm"),
                                     timeout_s=job.get("request_timeout_s", 600))
    adapter = None
    train_metrics: dict = {}
    if job.get("code") is not None:
        from selfdisco.losses import Candidate
        from selfdisco.train import TrainSettings, train_adapter

        started = time.perf_counter()
        data = task.preference_data(ctx)
        timings["data"] = round(time.perf_counter() - started, 2)
        settings = TrainSettings(**job["train_settings"])
        progress_path = out_dir / PROGRESS_FILE

        def progress(step: int, total: int, logs: dict) -> None:
            with open(progress_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, "total": total,
                                         "loss": logs.get("loss")}) + "\n")

        candidate = Candidate(thought="", name=job["name"], code=job["code"])
        started = time.perf_counter()
        with _server_asleep(job):
            trained = train_adapter(model_path=job["model_path"], data=data, settings=settings,
                                    out_dir=out_dir, candidate=candidate,
                                    ref_cache_dir=job.get("ref_cache_dir"),
                                    seed=job["train_seed"], progress=progress)
        timings["train"] = round(time.perf_counter() - started, 2)
        train_metrics = dict(trained.metrics or {})
        train_metrics.update(seconds_per_step=trained.seconds_per_step,
                             peak_rss_mb=trained.peak_rss_mb, steps=trained.steps_done)
        if trained.status != "ok":
            status = "diverged" if trained.status == "diverged" else "failed"
            return {"status": status, "reason": trained.error or trained.status,
                    "step": trained.steps_done, "metrics": {"train": train_metrics},
                    "timings": timings}
        adapter = str(trained.adapter_path)
    started = time.perf_counter()
    fitness = task.evaluate(ctx, adapter_path=adapter)
    timings["score"] = round(time.perf_counter() - started, 2)
    metrics = {**fitness.metrics, "n": fitness.n}
    if train_metrics:
        metrics["train"] = train_metrics
    if not fitness.ok:
        return {"status": "failed", "reason": f"the task could not score the policy "
                f"({fitness.summary()})", "metrics": metrics, "timings": timings,
                "adapter": adapter}
    return {"status": "scored", "fitness": fitness.value, "stderr": fitness.stderr,
            "metrics": metrics, "timings": timings, "adapter": adapter}


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the process that started this worker dies (no orphans)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    try:
        result = evaluate(job)
    except Exception as err:  # noqa: BLE001 - any failure of a candidate is a result
        result = {"status": "failed", "reason": _one_line(err),
                  "traceback": traceback.format_exc()[-4000:]}
    write_text_atomic(job_path.parent / RESULT_FILE, json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

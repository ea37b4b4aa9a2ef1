"""Turning archive rows into fitness: live evaluation in worker processes, or a recorded run's.

WorkerEvaluator writes candidates/<id>/job.json and runs the worker through an executor.
RecordedEvaluator answers from another run's archive, matched by code, so a recorded run can be
replayed with no model at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfdisco.archive import Archive, Row
from selfdisco.executors import JOB_FILE, LocalExecutor

Progress = Callable[[Row, dict], None]
Done = Callable[[Row, dict], None]
Start = Callable[[Row], None]


def code_sha(code: str | None) -> str | None:
    return hashlib.sha256(code.encode()).hexdigest()[:16] if code is not None else None


@dataclass
class JobTemplate:
    """What every job of a run shares; each candidate adds its id, name and code."""

    task: str
    task_options: dict
    task_preset: str
    task_seed: int
    model_path: str
    cache_dir: str
    ref_cache_dir: str
    train_settings: dict
    train_seed: int
    server_url: str
    served_model: str
    sleep_url: str = ""  # the server's root URL when it must sleep while a worker trains
    judge_url: str = ""  # a judged task's judge server; empty: the policy's server
    judge_model: str = ""
    dtype: str = "float32"  # what the server samples in; KL is computed in it too

    def job(self, row: Row, out_dir: Path) -> dict:
        return {**self.__dict__, "id": row.id, "name": row.name or row.id, "code": row.code,
                "out_dir": str(out_dir)}


class WorkerEvaluator:
    def __init__(self, run_dir: Path, template: JobTemplate, executor: LocalExecutor,
                 timeout_s: float):
        self.run_dir = Path(run_dir)
        self.template = template
        self.executor = executor
        self.timeout_s = timeout_s

    def evaluate(self, rows: list[Row], on_progress: Progress, on_done: Done,
                 on_start: Start | None = None) -> None:
        by_dir = {}
        for row in rows:
            job_dir = self.run_dir / "candidates" / row.id
            job_dir.mkdir(parents=True, exist_ok=True)
            (job_dir / JOB_FILE).write_text(json.dumps(self.template.job(row, job_dir), indent=2))
            by_dir[job_dir] = row
        self.executor.map(list(by_dir), self.timeout_s,
                          on_progress=lambda d, p: on_progress(by_dir[d], p),
                          on_done=lambda d, r: on_done(by_dir[d], r),
                          on_start=(lambda d: on_start(by_dir[d])) if on_start else None)


class RecordedEvaluator:
    """Results of a recorded run, looked up by kind and code."""

    def __init__(self, source_run: Path):
        archive = Archive(source_run)
        self.results: dict[tuple, dict] = {}
        for row in archive.rows():
            if not row.evaluated:
                continue
            key = (row.kind, code_sha(row.code))
            self.results.setdefault(key, {
                "status": row.status, "fitness": row.fitness, "stderr": row.stderr,
                "metrics": row.metrics, "reason": row.reason, "timings": row.timings,
                "adapter": (row.metrics or {}).get("adapter"), "replayed_from": row.id})
        archive.close()

    def evaluate(self, rows: list[Row], on_progress: Progress, on_done: Done,
                 on_start: Start | None = None) -> None:
        for row in rows:
            if on_start:
                on_start(row)
            result = self.results.get((row.kind, code_sha(row.code)))
            if result is None:
                result = {"status": "failed", "reason": "not evaluated in the recorded run"}
            on_done(row, dict(result))

"""Turning archive rows into Results: live evaluation in worker processes, or a recorded run's.

WorkerEvaluator writes candidates/<id>/job.json and runs the worker through an executor.
RecordedEvaluator answers from another run's archive, matched by code, so a recorded run can be
replayed with no model at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from selfdisco.archive import Archive, Row
from selfdisco.executors import JOB_FILE, Executor
from selfdisco.records import Job, Result

Progress = Callable[[Row, dict], None]
Done = Callable[[Row, Result], None]
Start = Callable[[Row], None]


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
                 on_start: Start | None = None) -> None:
        by_dir = {}
        for row in rows:
            job_dir = self.run_dir / "candidates" / row.id
            job_dir.mkdir(parents=True, exist_ok=True)
            job = self.template.for_candidate(row.id, row.name or row.id, row.code, str(job_dir))
            (job_dir / JOB_FILE).write_text(json.dumps(job.to_dict(), indent=2))
            by_dir[job_dir] = row
        self.executor.map(list(by_dir), self.timeout_s,
                          on_progress=lambda d, p: on_progress(by_dir[d], p),
                          on_done=lambda d, r: on_done(by_dir[d], r),
                          on_start=(lambda d: on_start(by_dir[d])) if on_start else None)


class RecordedEvaluator:
    """Results of a recorded run, looked up by kind and code."""

    def __init__(self, source_run: Path):
        archive = Archive(source_run)
        self.results: dict[tuple, Result] = {}
        for row in archive.rows():
            if row.evaluated:
                self.results.setdefault((row.kind, code_sha(row.code)),
                                        replace(Result.from_row(row), replayed_from=row.id))
        archive.close()

    def evaluate(self, rows: list[Row], on_progress: Progress, on_done: Done,
                 on_start: Start | None = None) -> None:
        for row in rows:
            if on_start:
                on_start(row)
            result = self.results.get((row.kind, code_sha(row.code)))
            if result is None:
                result = Result.failed("not_recorded", "not evaluated in the recorded run")
            on_done(row, result)

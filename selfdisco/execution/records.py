"""The records that cross the process boundary between the loop and an evaluation worker.

`Job` is what a worker is asked to do (candidates/<id>/job.json); `Result` is what it answers
(result.json beside it). The loop records a Result in the archive, a replay answers with the
recorded ones, the burn-in cache keeps them. Each record has one JSON round-trip,
to_dict()/from_dict(), which refuses a field it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from selfdisco.rundir.events import DIVERGED, EVALUATED, FAILED, SCORED
from selfdisco.train.settings import TrainSettings

# A job directory (candidates/<id>/): what the worker writes beside job.json.
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.jsonl"

if TYPE_CHECKING:
    from selfdisco.rundir.archive import Row

# Why an evaluation did not score. The loop decides by these, never by the reason's text.
CAUSES = {
    "server": "the model server failed or refused a request (an LLM client error, or a failed "
              "sleep or wake-up call); the loop evaluates such a candidate once more",
    "timeout": "the evaluation ran past its time limit; its processes were killed",
    "killed": "the worker process died without writing a result (a signal such as the "
              "out-of-memory killer's, or a crash of the interpreter)",
    "diverged": "training met a non-finite loss or gradient and stopped",
    "candidate": "the candidate's loss raised an error while it was trained or evaluated",
    "task": "the task could not score the trained policy (no finite fitness)",
    "error": "anything else the worker raised: a bad job, missing data, a bug",
    "not_recorded": "a replay: the recorded run has no result for this candidate's code",
    "stopped": "multi-fidelity: not among the best at the cheap stage, so never trained fully",
}

# Result fields the archive keeps inside a row's metrics (the archive has no columns for them).
ROW_EXTRAS = ("adapter", "cause", "step", "cached_from", "replayed_from")


def _from_dict(cls: type, data: Any, what: str) -> Any:
    """cls(**data), refusing a non-dict, an unknown field or a missing required one."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, not {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    try:
        return cls(**data)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{what}: {err}") from None


@dataclass(frozen=True)
class Job:
    """One candidate's evaluation: what a run's jobs share, plus the candidate's own fields."""

    task: str
    task_options: dict
    task_preset: str
    task_seed: int  # seeds the task's sampling and splits
    train_seed: int  # seeds training
    model_path: str  # the policy's base model
    cache_dir: str  # where tasks cache preference pairs
    ref_cache_dir: str  # the shared reference log-prob cache
    train_settings: TrainSettings
    server_url: str  # the API root (…/v1) of the server that serves the policy
    served_model: str
    sleep_url: str = ""  # the server's root URL when it must sleep while a worker trains
    judge_url: str = ""  # a judged task's judge server; empty: the policy's server
    judge_model: str = ""
    judge_api_key_env: str = ""  # the NAME of the variable holding the judge's API key
    judge_structured: str = "vllm"  # the judge server's structured-output mode
    dtype: str = "float32"  # what the server samples in; KL is computed in it too
    request_timeout_s: float = 600.0  # per request to a model server
    id: str = ""  # the candidate's archive id
    name: str = ""
    code: str | None = None  # the loss; None scores the untrained base policy
    out_dir: str = ""  # receives the adapter, logs, progress.jsonl and result.json
    replicate: int = 0  # which of the candidate's training seeds (train_seed is its seed)
    fidelity: float = 1.0  # share of the training steps (multi-fidelity's cheap stage: < 1)

    def for_candidate(self, id: str, name: str, code: str | None, out_dir: str,
                      replicate: int = 0, train_seed: int | None = None) -> Job:
        """This job template filled in for one candidate (and one of its training seeds)."""
        return replace(self, id=id, name=name, code=code, out_dir=out_dir, replicate=replicate,
                       train_seed=self.train_seed if train_seed is None else train_seed)

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["train_settings"] = self.train_settings.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Job:
        if isinstance(data, dict) and isinstance(data.get("train_settings"), dict):
            settings = _from_dict(TrainSettings, data["train_settings"], "the job's training "
                                  "settings")
            data = {**data, "train_settings": settings}
        return _from_dict(cls, data, "the job")


@dataclass(frozen=True)
class Result:
    """The outcome of evaluating one candidate.

    Attributes:
        status: SCORED, DIVERGED or FAILED (selfdisco/rundir/events.py).
        fitness: the task's fitness (scored only), stderr its standard error.
        metrics: the task's side metrics ("n", "kl", ...; "train" holds training metrics).
        timings: seconds per stage (data, train, score).
        adapter: the trained LoRA adapter's directory, if one was saved.
        reason: one line for people and for the proposer's feedback; never parsed.
        cause: why it did not score (a key of CAUSES); None when scored.
        step: the training step reached when training diverged or failed.
        traceback: the worker's traceback of an unexpected exception.
        replayed_from: in a replay, the recorded run's candidate this result comes from.
        cached_from: the run that measured this result, when the burn-in cache supplied it.
        replicate, train_seed: which training seed of the candidate this result is (the
            per-seed results a candidate's row combines; None on the combined result).
    """

    status: str
    fitness: float | None = None
    stderr: float | None = None
    metrics: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    adapter: str | None = None
    reason: str | None = None
    cause: str | None = None
    step: int | None = None
    traceback: str | None = None
    replayed_from: str | None = None
    cached_from: str | None = None
    replicate: int | None = None
    train_seed: int | None = None

    def __post_init__(self) -> None:
        if self.status not in EVALUATED:
            raise ValueError(f"a result's status is one of {', '.join(EVALUATED)}, not "
                             f"{self.status!r}")
        if self.cause is not None and self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r}; known: {', '.join(CAUSES)}")
        if self.status == SCORED and not isinstance(self.fitness, int | float):
            raise ValueError(f"a scored result needs a numeric fitness, not {self.fitness!r}")

    @classmethod
    def failed(cls, cause: str, reason: str, **more: Any) -> Result:
        """A failure: why (a key of CAUSES) and one line saying what happened."""
        return cls(status=DIVERGED if cause == "diverged" else FAILED, cause=cause,
                   reason=reason, **more)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Any) -> Result:
        return _from_dict(cls, data, "the result")

    def archive_fields(self) -> dict:
        """The archive columns this result sets (ROW_EXTRAS ride in metrics)."""
        metrics = dict(self.metrics)
        metrics.update({key: getattr(self, key) for key in ROW_EXTRAS
                        if getattr(self, key) is not None})
        columns = {"status": self.status, "metrics": metrics, "timings": dict(self.timings),
                   "reason": self.reason}
        if self.status == SCORED:
            columns.update(fitness=float(self.fitness), stderr=self.stderr)
        return columns

    @classmethod
    def from_row(cls, row: Row) -> Result:
        """The result an evaluated archive row recorded (the inverse of archive_fields)."""
        metrics = dict(row.metrics or {})
        extras = {key: metrics.pop(key) for key in ROW_EXTRAS if key in metrics}
        scored = row.status == SCORED
        return cls(status=row.status, fitness=row.fitness if scored else None,
                   stderr=row.stderr if scored else None, metrics=metrics,
                   timings=dict(row.timings or {}), reason=row.reason, **extras)

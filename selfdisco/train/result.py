"""The outcome of one training run (light module: no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# A training run's outcome: its own words, not a candidate's status (selfdisco/rundir/events.py)
# though the worker turns TRAIN_DIVERGED into a diverged candidate.
TRAIN_OK = "ok"
TRAIN_DIVERGED = "diverged"  # a non-finite loss or gradient stopped training
TRAIN_FAILED = "failed"  # an exception, e.g. in the loss function
STATUSES = (TRAIN_OK, TRAIN_DIVERGED, TRAIN_FAILED)


@dataclass
class TrainResult:
    """What `train_adapter` returns.

    Attributes:
        status: "ok", "diverged" (a non-finite loss or gradient stopped training) or "failed"
            (an exception, e.g. in the loss function).
        steps_done: optimizer steps completed (for "diverged", the step that went non-finite).
        metrics: the last logged metrics of a finite step (TRL's rewards/*, logps/*, ... and
            rho/mean, rho/std, rho/min, rho/max), plus ref_cache ("computed", "reused", "off").
        adapter_path: the saved PEFT adapter (status "ok" only), loadable by vLLM.
        seconds_per_step: mean wall time of an optimizer step, the first step left out.
        peak_rss_mb: the process's peak resident memory so far.
        error: one line saying what went wrong, or None.
    """

    status: str
    steps_done: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    adapter_path: str | None = None
    seconds_per_step: float | None = None
    peak_rss_mb: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == TRAIN_OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

"""What the run views show, one record each: a candidate's row and a log line (state.py folds
the event log into them), and the order of the candidates table. Pure Python (no Textual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from selfdisco.rundir.events import PROPOSED, SCORED, TRAINING


@dataclass
class CandidateRow:
    """One candidate as the UI shows it."""

    id: str
    generation: int
    name: str
    order: int  # arrival order in the log
    thought: str = ""
    code: str = ""
    proposer: str = ""
    attempt: int = 0
    status: str = PROPOSED
    reason: str | None = None  # why it was rejected, diverged or failed
    stage: str | None = None  # the screening stage that rejected it
    fitness: float | None = None
    stderr: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    step: int | None = None  # training progress
    total: int | None = None
    loss: float | None = None
    proposed_t: float | None = None
    finished_t: float | None = None
    stages: dict[str, dict] = field(default_factory=dict)  # multi-fidelity stage -> result

    @property
    def kl(self) -> float | None:
        """KL(policy || reference) from the metrics, when the task measured it."""
        value = self.metrics.get("kl")
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        return None

    @property
    def cached_from(self) -> str | None:
        """The run whose burn-in cache this baseline's result was reused from, if it was."""
        value = self.metrics.get("cached_from")
        return str(value) if value else None

    @property
    def status_text(self) -> str:
        """The status, with training progress while it trains; a reused baseline says so."""
        if self.status == TRAINING and self.step is not None and self.total:
            return f"training {self.step}/{self.total}"
        if self.status == SCORED and self.cached_from:
            return "scored (cached)"
        return self.status

    def matches(self, text: str) -> bool:
        """True when `text` appears in the name or the status (case-insensitive)."""
        text = text.strip().lower()
        return not text or text in self.name.lower() or text in self.status.lower()


@dataclass
class LogLine:
    t: float
    level: str  # info, warning, error
    text: str


def row_sort_key(row: CandidateRow) -> tuple:
    """Best fitness first; candidates without one after, in arrival order."""
    if row.fitness is None:
        return (1, 0.0, row.order)
    return (0, -row.fitness, row.order)

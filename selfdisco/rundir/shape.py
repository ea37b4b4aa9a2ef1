"""A loss's shape: its value and slope against rho on one fixed grid (pure Python, no torch).

rho is the chosen-minus-rejected log-ratio, as the loss receives it (unscaled; the loss applies
beta itself). GRID is the one grid of rho values that the fingerprint, the TUI, the report and
`selfdisco losses plot` all use. Its range, -60 to 60, is the paper's: at the discovery beta of
0.05 it spans beta * rho in [-3, 3], where dpo's loss falls from 3.05 to 0.05, and at beta 0.1
it spans [-6, 6]. Its step of 1 resolves gates on raw rho, such as the original DiscoPOP gate
sigmoid(rho) with its extrema near rho = -2.4 and 1.4.

A shape is computed once, in the screening sandbox at the run's beta (checks.py), and stored
with the fingerprint in the archive; everything else only plots what was recorded.

Training reaches far less of the grid: LoRA starts at rho = 0, and after 32 steps of the cpu
recipe (beta 0.1) the batch's rho had means of -3.9 to +4.2 and standard deviations of 2.4 to 8.0
(nine trainings). A Reach is the part of the grid a run's burn-in trainings reached (reach_of);
the run records it, and duplicates are judged there (losses/fingerprint.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRID = tuple(float(rho) for rho in range(-60, 61))  # rho values
GRID_BASE = -50.0  # log-prob level the grid sits at: pc = base + rho/2, pr = base - rho/2
# A training reaches its batch's mean rho +- REACH_SD standard deviations (reach_of)
REACH_SD = 2.0


def grid_logps() -> tuple[list[float], ...]:
    """The four loss inputs (policy chosen, policy rejected, reference chosen, reference
    rejected) that put each example of a batch at one rho of GRID."""
    return ([GRID_BASE + rho / 2 for rho in GRID], [GRID_BASE - rho / 2 for rho in GRID],
            [GRID_BASE] * len(GRID), [GRID_BASE] * len(GRID))


@dataclass(frozen=True)
class LossShape:
    """Per-example loss and its slope d loss / d rho at each rho (None where not finite)."""

    beta: float
    rho: tuple[float, ...]
    loss: tuple[float | None, ...]
    slope: tuple[float | None, ...]

    def to_dict(self) -> dict:
        return {"beta": self.beta, "rho": list(self.rho), "loss": list(self.loss),
                "slope": list(self.slope)}

    @classmethod
    def from_dict(cls, data: dict) -> LossShape:
        return cls(beta=float(data["beta"]), rho=tuple(float(x) for x in data["rho"]),
                   loss=tuple(finite_or_none(x) for x in data["loss"]),
                   slope=tuple(finite_or_none(x) for x in data["slope"]))

    def within(self, low: float, high: float) -> LossShape:
        """The part of the shape with low <= rho <= high."""
        keep = [i for i, rho in enumerate(self.rho) if low <= rho <= high]
        return LossShape(self.beta, tuple(self.rho[i] for i in keep),
                         tuple(self.loss[i] for i in keep), tuple(self.slope[i] for i in keep))


@dataclass(frozen=True)
class Reach:
    """The rho that a run's trained policies reached on its own pairs, at the run's beta."""

    low: float
    high: float
    beta: float  # the run's training beta
    trainings: int  # the trainings it was measured on

    def covers(self, rho: float) -> bool:
        return self.low <= rho <= self.high

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "beta": self.beta,
                "trainings": self.trainings}

    @classmethod
    def from_dict(cls, data: dict) -> Reach:
        return cls(low=float(data["low"]), high=float(data["high"]), beta=float(data["beta"]),
                   trainings=int(data["trainings"]))


def reach_of(train_metrics: list[dict], beta: float) -> Reach | None:
    """The rho reached by trainings whose last logged step had `train_metrics` (rho/mean,
    rho/std, rho/min, rho/max of its batch), or None when none logged rho.

    rho starts at 0 and spreads as training goes, so the last step is the widest. Each
    training reaches its batch's mean +- REACH_SD standard deviations (about 95% of its pairs
    if they spread normally; a batch of 4 always lies within +-1.73 sd), or the batch's own
    extremes if further out. The reach spans every training, and at least |beta * rho| <= 1:
    there the closest pair the duplicate tolerance (1e-3) is set from, dpo at 1.01 x its beta,
    stays 1.2e-3 apart (1.3e-3 on the whole grid, 7e-4 on |beta * rho| <= 0.5), and a gentle
    training that stays near 0 (the smoke preset's) would leave one or two grid points. With
    the measured figures above the reach is at most [-19.9, 20.2].

    Args:
        train_metrics: a training result's metrics["train"] for each training.
        beta: the run's beta.
    """
    lows, highs = [], []
    for metrics in train_metrics:
        mean, sd = finite_or_none(metrics.get("rho/mean")), finite_or_none(metrics.get("rho/std"))
        if mean is None or sd is None:
            continue
        low, high = finite_or_none(metrics.get("rho/min")), finite_or_none(metrics.get("rho/max"))
        lows.append(min(mean - REACH_SD * sd, mean if low is None else low))
        highs.append(max(mean + REACH_SD * sd, mean if high is None else high))
    if not lows:
        return None
    floor = 1 / beta if beta > 0 else 0.0
    return Reach(low=min(*lows, -floor), high=max(*highs, floor), beta=beta,
                 trainings=len(lows))


def finite_or_none(value) -> float | None:
    """The value as a float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None

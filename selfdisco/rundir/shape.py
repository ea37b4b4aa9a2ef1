"""A loss's shape: its value and slope against rho on one fixed grid (pure Python, no torch).

rho is the chosen-minus-rejected log-ratio, as the loss receives it (unscaled; the loss applies
beta itself). GRID is the one grid of rho values that the fingerprint, the TUI, the report and
`selfdisco losses plot` all use. Its range, -60 to 60, is the paper's: at the discovery beta of
0.05 it spans beta * rho in [-3, 3], where dpo's loss falls from 3.05 to 0.05, and at beta 0.1
it spans [-6, 6]. Its step of 1 resolves gates on raw rho, such as the original DiscoPOP gate
sigmoid(rho) with its extrema near rho = -2.4 and 1.4.

A shape is computed once, in the screening sandbox at the run's beta (checks.py), and stored
with the fingerprint in the archive; everything else only plots what was recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

GRID = tuple(float(rho) for rho in range(-60, 61))  # rho values
GRID_BASE = -50.0  # log-prob level the grid sits at: pc = base + rho/2, pr = base - rho/2


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


def finite_or_none(value) -> float | None:
    """The value as a float, or None when it is missing, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None

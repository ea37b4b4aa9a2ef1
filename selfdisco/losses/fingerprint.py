"""Behavioural fingerprints: what a loss does to training, independent of how its code is written.

Training sees a loss only through the gradients it sends to the policy's chosen and rejected
log-probs, and AdamW divides each update by the gradient's running scale. So c * L (c > 0) trains
like L and L + const trains exactly like L: a fingerprint holds only the policy gradients, on the
rho grid of shape.py and on one fixed random batch, at each of two betas, and the distance
compares them up to one positive factor per beta (a run trains at one beta).

AdamW's invariance is exact up to its epsilon (1e-8, added to sqrt(v)): a loss scaled so far down
that its gradients approach 1e-8 trains more slowly, and gradient clipping (max_grad_norm) breaks
it when one scale is clipped and the other is not. Measured in a cpu-preset run (issue 13): 1.4,
1.7 and 2.2 x (x - 1)**2 trained to identical fitness and KL.

The distance is the relative L2 difference of the worst block after scaling each beta's gradients
to unit norm: 0 for the same behaviour, 1 for opposite gradients. tests/losses/test_dedup.py
lists the pairs, known to train alike or known to differ, that DUPLICATE_TOLERANCE is set from.
This module is pure Python: the parent process compares fingerprints without importing torch;
they are computed in the sandbox (checks.py).

A fingerprint is stored on the whole grid, but a run compares it where its training goes: after
the burn-in the run records the rho its trained policies reached (shape.Reach, at least
|beta * rho| <= 1), and `within=` that reach keeps only the grid points inside it, at the run's
beta when it is one of BETAS. A hinge that differs from the catalog's only below rho = -20 is
then hinge (on a cpu run such a loss reproduced hinge's fitness to the last digit and had passed
as novel). Runs recorded without a reach compare on the whole grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selfdisco.rundir.shape import GRID, Reach, finite_or_none

# 3: policy gradients only, compared up to a positive factor per beta
# (2: loss and every gradient on the rho grid of shape.py; 1: a grid of -40 to 40 in steps of 2)
VERSION = 3
BETAS = (0.05, 0.1)
BATCH_SEED = 1234
BATCH_SIZE = 16
DUPLICATE_TOLERANCE = 1e-3  # from the pairs in tests/losses/test_dedup.py
FLOOR = 1e-6  # per-entry size, relative to the unit norm, below which nothing counts


@dataclass(frozen=True)
class Fingerprint:
    """Named blocks of gradients (None where not finite); a name reads "beta=B/where/input"."""

    blocks: tuple[tuple[str, tuple[float | None, ...]], ...]
    version: int = VERSION

    def to_dict(self) -> dict:
        return {"version": self.version, "blocks": {name: list(v) for name, v in self.blocks}}

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        blocks = tuple((str(name), tuple(finite_or_none(x) for x in values))
                       for name, values in data["blocks"].items())
        return cls(blocks=blocks, version=int(data.get("version", VERSION)))

    def distance(self, other: Fingerprint, within: Reach | None = None) -> float:
        """Relative L2 difference of the worst block, each beta's gradients scaled to unit
        norm: 0 for the same behaviour up to a positive factor, at most 1. `within`: compare
        only there (restricted)."""
        if within is not None:
            return self.restricted(within).distance(other.restricted(within))
        if self.version != other.version or [n for n, _ in self.blocks] != [
                n for n, _ in other.blocks]:
            return 1.0
        if any(len(a) != len(b) for (_, a), (_, b) in zip(self.blocks, other.blocks, strict=True)):
            return 1.0
        worst = 0.0
        for (_, mine), (_, theirs) in zip(_unit(self.blocks), _unit(other.blocks), strict=True):
            worst = max(worst, _block_distance(mine, theirs))
        return min(worst, 1.0)

    def is_duplicate(self, other: Fingerprint, tolerance: float = DUPLICATE_TOLERANCE,
                     within: Reach | None = None) -> bool:
        """Whether the two train alike, on the whole grid or `within` a run's reach."""
        return self.distance(other, within) <= tolerance

    def restricted(self, reach: Reach) -> Fingerprint:
        """The blocks where training goes: the grid points inside `reach`, at the reach's beta
        when the fingerprint has it. The batch blocks stay whole: their rho lie within +-9.3
        (policies within a few nats of their references), inside any reach of a run at beta
        0.1 or below, and only they see a loss that reads the log-probs other than through rho
        (their levels, the reference's margin), which the grid holds fixed."""
        groups = {name.split("/")[0] for name, _ in self.blocks}
        group = next((g for g in groups if _beta_of(g) is not None
                      and math.isclose(_beta_of(g), reach.beta)), None)
        blocks = []
        for name, values in self.blocks:
            if group is not None and name.split("/")[0] != group:
                continue
            if name.split("/")[1:2] == ["grid"] and len(values) == len(GRID):
                values = tuple(v for rho, v in zip(GRID, values, strict=True)
                               if reach.covers(rho))
            blocks.append((name, values))
        return Fingerprint(blocks=tuple(blocks), version=self.version)


def _beta_of(group: str) -> float | None:
    """B of a block group "beta=B"; None for another group (the digits task's "cls")."""
    if not group.startswith("beta="):
        return None
    try:
        return float(group.removeprefix("beta="))
    except ValueError:
        return None


def _unit(blocks):
    """The blocks with each beta's finite entries divided by their joint L2 norm."""
    norms: dict[str, float] = {}
    for name, values in blocks:
        group = name.split("/")[0]
        norms[group] = norms.get(group, 0.0) + sum(v * v for v in values if v is not None)
    scaled = []
    for name, values in blocks:
        norm = math.sqrt(norms[name.split("/")[0]]) or 1.0
        scaled.append((name, tuple(None if v is None else v / norm for v in values)))
    return scaled


def _block_distance(mine: tuple[float | None, ...], theirs: tuple[float | None, ...]) -> float:
    """||a - b|| / (||a|| + ||b||) over the finite entries: 0 when equal, 1 when opposite."""
    diff = norm_a = norm_b = 0.0
    for a, b in zip(mine, theirs, strict=True):
        if a is None or b is None:
            if (a is None) != (b is None):
                return 1.0
            continue
        diff += (a - b) ** 2
        norm_a += a * a
        norm_b += b * b
    floor = FLOOR * math.sqrt(len(mine))
    return math.sqrt(diff) / (math.sqrt(norm_a) + math.sqrt(norm_b) + floor)

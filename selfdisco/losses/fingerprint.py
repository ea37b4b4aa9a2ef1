"""Behavioural fingerprints: what a loss does, independent of how its code is written.

A fingerprint holds the loss and its gradients on the rho grid of shape.py (the grid the loss
shapes are drawn on) and on one fixed random batch, at two betas. The distance between two
fingerprints is the relative L2 difference of their worst block; candidates within a small
tolerance behave the same and count as duplicates. A constant offset in the loss changes no
gradient, so loss blocks are compared after removing their mean. This module is pure Python:
the parent process compares fingerprints without importing torch; they are computed in the
sandbox (checks.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from selfdisco.losses.shape import finite_or_none

VERSION = 2  # 2: the rho grid of shape.py (1: -40 to 40 in steps of 2)
BETAS = (0.05, 0.1)
BATCH_SEED = 1234
BATCH_SIZE = 16
DUPLICATE_TOLERANCE = 1e-2  # 1%: e.g. the same loss scaled by 1.01 is a duplicate
FLOOR = 1e-6  # per-entry scale below which differences do not count


@dataclass(frozen=True)
class Fingerprint:
    """Named blocks of numbers (None where the loss was not finite)."""

    blocks: tuple[tuple[str, tuple[float | None, ...]], ...]
    version: int = VERSION

    def to_dict(self) -> dict:
        return {"version": self.version, "blocks": {name: list(v) for name, v in self.blocks}}

    @classmethod
    def from_dict(cls, data: dict) -> Fingerprint:
        blocks = tuple((str(name), tuple(finite_or_none(x) for x in values))
                       for name, values in data["blocks"].items())
        return cls(blocks=blocks, version=int(data.get("version", VERSION)))

    def distance(self, other: Fingerprint) -> float:
        """Relative L2 difference of the worst block: 0 for identical behaviour, at most 1."""
        if self.version != other.version or [n for n, _ in self.blocks] != [
                n for n, _ in other.blocks]:
            return 1.0
        worst = 0.0
        for (name, mine), (_, theirs) in zip(self.blocks, other.blocks, strict=True):
            if len(mine) != len(theirs):
                return 1.0
            if name.endswith("loss"):
                mine, theirs = _centred(mine), _centred(theirs)
            worst = max(worst, _block_distance(mine, theirs))
        return min(worst, 1.0)

    def is_duplicate(self, other: Fingerprint, tolerance: float = DUPLICATE_TOLERANCE) -> bool:
        return self.distance(other) <= tolerance


def _centred(values: tuple[float | None, ...]) -> tuple[float | None, ...]:
    finite = [v for v in values if v is not None]
    if not finite:
        return values
    mean = sum(finite) / len(finite)
    return tuple(None if v is None else v - mean for v in values)


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

"""A candidate's loss shape beside dpo's (as in the paper's Figure 6), read from the archive.

Shapes are computed once, in the screening sandbox at the run's beta, and stored with the
fingerprint (selfdisco/rundir/shape.py); the TUI only reads them, so no candidate code runs in
its process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfdisco.rundir.archive import read_shapes
from selfdisco.rundir.shape import LossShape


@dataclass(frozen=True)
class RecordedShape:
    candidate: LossShape
    dpo: LossShape | None  # the run's reference; None in runs that did not record it


def read_shape(run_dir: Path, id: str) -> RecordedShape | None:
    """The candidate's recorded shape and dpo's, or None when its shape is not recorded."""
    shape, reference = read_shapes(run_dir, id)
    if shape is None:
        return None
    return RecordedShape(LossShape.from_dict(shape),
                         LossShape.from_dict(reference) if reference else None)

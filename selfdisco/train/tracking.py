"""Experiment trackers for candidate training: TRL's report_to, and a summary per candidate.

Light module: the trackers' packages are imported only when a summary is written. TRL sends the
training logs (loss, rewards, ...) to the trackers named in TrainSettings.report_to; once a
candidate is scored, `log_summary` adds its fitness and metrics as the tracker run's summary
(TensorBoard: scalars under runs/summary beside TRL's logs; Weights & Biases: wandb.run.summary).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError

# Tracker name -> the package that provides it (what to pip install).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}
SUMMARY_DIR = "runs/summary"  # under a candidate's directory, beside TRL's runs/<time>


def check_trackers(value: Any) -> tuple[str, ...]:
    """The trackers of a report_to setting (a list of names; ["none"] or [] for none), or a
    UserError naming an unknown tracker or one whose package is not installed."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise UserError(f"train.report_to must be a list of tracker names ({', '.join(TRACKERS)} "
                        f"or none), not {value!r}")
    names = tuple(v for v in value if v != "none")
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"train.report_to names {name!r}, which is not a tracker selfdisco "
                            f"knows; choose from {', '.join(TRACKERS)} or none")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(f"train.report_to names {name}, but the {TRACKERS[name]} package is "
                            f"not installed: pip install {TRACKERS[name]}, or take {name} out "
                            "of train.report_to")
    return names


def summary_scalars(fitness: float | None, stderr: float | None, metrics: dict) -> dict:
    """The numbers a candidate's summary holds: fitness, its standard error, the task's numeric
    metrics and the training metrics (as train/NAME)."""
    scalars = {"fitness": fitness, "fitness_stderr": stderr}
    for key, value in metrics.items():
        if key == "train" and isinstance(value, dict):
            scalars.update({f"train/{k}": v for k, v in value.items()})
        else:
            scalars[key] = value
    return {k: float(v) for k, v in scalars.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def log_summary(report_to: tuple[str, ...], out_dir: str | Path, *, name: str, status: str,
                fitness: float | None, stderr: float | None, metrics: dict) -> None:
    """Write one candidate's outcome as the summary of each tracker in `report_to`."""
    if not report_to:
        return
    scalars = summary_scalars(fitness, stderr, metrics)
    if "tensorboard" in report_to:
        # lazy: loads torch
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(Path(out_dir) / SUMMARY_DIR))
        for key, value in scalars.items():
            writer.add_scalar(f"summary/{key}", value, 0)
        writer.add_text("summary/status", f"{name}: {status}", 0)
        writer.close()
    if "wandb" in report_to:
        import wandb  # lazy: an optional package, installed only by those who track with it

        run = wandb.run or wandb.init(project=os.environ.get("WANDB_PROJECT", "selfdisco"),
                                      name=name, dir=str(out_dir))
        run.summary.update({**scalars, "status": status, "candidate": name})
        wandb.finish()

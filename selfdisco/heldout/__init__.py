"""Held-out evaluation of a run's losses on protocols the search never saw.

A protocol is a function `run(ctx: HeldoutContext) -> None`, registered by name in PROTOCOLS
(lazy "module:attr" targets). It walks its points (loss, beta, seed), skips those
`ctx.done(point)` says are recorded, measures the others (`ctx.evaluate` trains and scores a
policy; `ctx.policy` is the run's policy server, started on first use) and records each with
`ctx.record(point, metrics)` the moment it is measured, so a killed command resumes where it
stopped; record also emits the heldout_point event the TUI and the progress lines show.
A record that is not a measured point (confirm's pre-registered statement and its verdict) is
kept under Point(protocol, name, 0.0, RECORD_SEED): record stores it and emits a log line
(metrics["summary"]) instead, and the progress counts leave it out.

Beside run, the protocol's module may define:
- `points(ctx) -> list[Point]`: every point it measures (the command's time estimate and the
  progress totals count the ones not yet done);
- `seconds_per_point(archive) -> float | None`: its measured cost of a point, for the estimate;
- `report_lines(rows, run_dir) -> list[str]`: its Markdown subsection of the report's
  "Held-out evaluation" section, from its archive rows (archive.HeldoutRow);
- `DEFAULT_SEEDS: int`: how many fresh seeds ctx.seeds holds when --seeds is not given (2
  otherwise).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdisco.registry import Registry

# Protocol name -> "module:attr" of its run(ctx) function.
PROTOCOLS = Registry("held-out protocol", {
    "frontier": "selfdisco.heldout.frontier:run",
    "pairwise": "selfdisco.heldout.pairwise:run",
    "lmeval": "selfdisco.heldout.lmeval:run",
    "confirm": "selfdisco.heldout.confirm:run",
})
# The protocols whose points are the run's task's fitness (ctx.evaluate's score), so they are
# scored on ctx.scoring's prompts; their rows' metrics say which (metrics["scoring"]).
TASK_SCORED = ("frontier", "confirm")
RECORD_SEED = -1  # the seed of a protocol's record that is not a measured point (see above)


@dataclass(frozen=True)
class HeldoutLoss:
    """A loss under held-out evaluation: the run's candidate id (or the catalog name of a
    reference), its name, code and discovery fitness (None for a reference not in the run)."""

    id: str
    name: str
    code: str
    fitness: float | None = None


@dataclass(frozen=True)
class Point:
    """One measurement of a protocol: a loss trained at one beta with one training seed."""

    protocol: str
    loss_id: str
    beta: float
    seed: int

    def label(self) -> str:
        return f"{self.loss_id} beta={self.beta:g} seed={self.seed}"

    def dir_name(self) -> str:
        """Where the point's training and scoring files go, under heldout/."""
        return f"{self.protocol}/{self.loss_id}/beta{self.beta:g}-seed{self.seed}"


@dataclass
class HeldoutContext:
    """What a protocol gets.

    Attributes:
        run_dir: the run directory; files go under run_dir/heldout/.
        config: the run's RunConfig.
        losses: the losses to evaluate, best discovered first, then the references.
        betas: the betas to train at (protocols that do not sweep use config's beta).
        seeds: fresh training seeds, none of them a seed the run trained with.
        options: protocol options from the command line (--option KEY=VALUE).
        evaluate: evaluate(point, code, task_options) -> records.Result: trains an adapter
            (digits: a classifier) under `code` with the run's recipe at point.beta and
            point.seed, scores it with the run's task (its options updated with
            scoring.task_options, then task_options); Result.adapter is the adapter.
        policy: policy() -> an LLMClient for the run's policy model (with LoRA), started on
            first call and stopped when the command ends.
        record: record(point, metrics, status=HELDOUT_DONE) keeps a measured point in the archive
            and emits heldout_point (metrics["summary"]: its one-line progress text;
            metrics["reason"]: why a failed point failed).
        done: done(point) -> True when the point is recorded (skip it).
        emit: emit(type, **fields) appends an event (selfdisco/rundir/events.py).
        scoring: which prompts and sampling seed the task scores points on
            (session.HeldoutScoring: by default ones the search never used); None in tests
            that do not score.
    """

    run_dir: Path
    config: Any
    losses: list[HeldoutLoss]
    betas: list[float]
    seeds: list[int]
    evaluate: Callable[..., Any]
    policy: Callable[[], Any]
    record: Callable[..., None]
    done: Callable[[Point], bool]
    emit: Callable[..., Any]
    options: dict[str, str] = field(default_factory=dict)
    scoring: Any = None


def protocol_names() -> list[str]:
    return PROTOCOLS.names()


def protocol_hook(name: str, attr: str) -> Callable[..., Any] | None:
    """The optional function `attr` (points, seconds_per_point, report_lines) of protocol
    `name`'s module; None when it defines none."""
    run = PROTOCOLS.load(name)
    return getattr(importlib.import_module(run.__module__), attr, None)

"""Running held-out protocols on a run: what to measure, on which prompts, and its time
estimate, then each protocol, with its points kept in the run's archive and its progress in
the run's events."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from selfdisco.config import read_run_config
from selfdisco.formatting import format_duration
from selfdisco.heldout import PROTOCOLS, TASK_SCORED, HeldoutContext, protocol_hook
from selfdisco.heldout.session import (
    ClassificationTrials,
    PointStore,
    WorkerTrials,
    choose_losses,
    default_references,
    fresh_seeds,
    heldout_scoring,
    recorded_metrics,
)
from selfdisco.launch.checks import check_run
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import EventWriter
from selfdisco.tasks import get_task

DEFAULT_SEEDS = 2  # fresh seeds per point of a protocol that names no DEFAULT_SEEDS


@dataclass
class HeldoutRequest:
    """What the user asked for (selfdisco heldout's flags)."""

    protocols: list[str]
    betas: list[float]
    seeds: int | None = None  # None: each protocol's DEFAULT_SEEDS
    top: int = 1
    references: list[str] | None = None  # None: the task's (session.default_references)
    losses: list[str] = field(default_factory=list)  # explicit: replaces top and references
    options: dict[str, str] = field(default_factory=dict)
    server_url: str = ""
    prompts: str = "unused"  # session.PROMPT_CHOICES
    prompt_count: int | None = None  # how many unused prompts (None: the task's default)


@dataclass
class ProtocolEstimate:
    name: str
    total: int
    missing: int
    seconds_per_point: float | None


@dataclass
class HeldoutEstimate:
    """What a held-out evaluation measures and how long it should take."""

    text: str  # in words, one line per protocol and the estimate
    protocols: list[ProtocolEstimate]
    estimate_s: float | None  # None when a protocol with points to measure has no measure


def estimate_text(estimates: list[ProtocolEstimate]) -> tuple[str, float | None]:
    """What is to be measured, in words, and its estimated seconds (None when a protocol has
    no measure)."""
    lines: list[str] = []
    total: float | None = 0.0
    for one in estimates:
        each = one.seconds_per_point
        cost = f"about {format_duration(each)} each" if each is not None else "no measured cost"
        lines.append(f"{one.name}: {one.missing} of {one.total} points to measure ({cost}, "
                     "from this run's own timings)")
        if one.missing:
            total = None if total is None or each is None else total + each * one.missing
    if all(p.missing == 0 for p in estimates):
        return "\n".join(lines + ["nothing to measure: every point is recorded"]), 0.0
    if total is None:
        lines.append("no time estimate: the run has no measured training and scoring times")
    else:
        lines.append(f"estimated time: {format_duration(total)} (plus starting the model "
                     "server)")
    return "\n".join(lines), total


def run_heldout(run_dir: Path, request: HeldoutRequest, *, listeners: list | None = None,
                estimate_only: bool = False, trials: Any = None,
                log: Callable[[str], None] = print) -> HeldoutEstimate:
    """Estimate and run the requested protocols on the run in run_dir; returns the estimate.
    `trials` trains and scores points (default: WorkerTrials, a worker process each
    against a vLLM server started on first use)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    settings = check_run(config)
    kind = get_task(config.task.name).kind
    for name in request.protocols:
        PROTOCOLS.load(name)  # an unknown name: UserError naming the known ones
    with ExitStack() as stack:
        archive = Archive(run_dir)
        stack.callback(archive.close)
        task_scored = any(name in TASK_SCORED for name in request.protocols)
        scoring = (heldout_scoring(config, recorded_metrics(archive), request.prompts,
                                   request.prompt_count) if task_scored else None)
        scoring_options = scoring.task_options if scoring else {}
        events = EventWriter(run_dir, listeners=listeners)
        store = PointStore(archive, events.emit, scoring)
        if trials is None:
            trials = (ClassificationTrials(config, scoring_options)
                      if kind == "classification" else
                      WorkerTrials(run_dir, config, settings, request.server_url,
                                   scoring_options))
            stack.callback(trials.close)
        references = (default_references(kind) if request.references is None
                      else request.references)
        losses = choose_losses(archive, top=request.top, references=references,
                               names=request.losses or None, kind=kind)
        ctx = HeldoutContext(run_dir=run_dir, config=config, losses=losses,
                             betas=request.betas, seeds=[], evaluate=trials.evaluate,
                             policy=trials.policy, record=store.record, done=store.done,
                             emit=events.emit, options=dict(request.options), scoring=scoring)
        contexts = {name: replace(ctx, seeds=fresh_seeds(config, _seed_count(name, request)))
                    for name in request.protocols}
        estimates = [_estimate_protocol(name, contexts[name], archive, store)
                     for name in request.protocols]
        text, seconds = estimate_text(estimates)
        if scoring is not None:
            text += "\n" + scoring.line()
        estimate = HeldoutEstimate(text, estimates, seconds)
        if estimate_only:
            return estimate
        log(text)
        events.emit("heldout_started", protocols=list(request.protocols),
                    losses=[loss.id for loss in losses],
                    points=sum(p.missing for p in estimates),
                    estimate_s=round(seconds, 1) if seconds is not None else None)
        if scoring is not None:
            events.emit("log", level="warning" if scoring.seen_by_search else "info",
                        message=f"held-out points {scoring.line()}")
        stopped = True
        try:
            for name in request.protocols:
                PROTOCOLS.load(name)(contexts[name])
            stopped = False
        finally:
            events.emit("heldout_finished", protocols=list(request.protocols), stopped=stopped)
    return estimate


def _seed_count(name: str, request: HeldoutRequest) -> int:
    """--seeds, else the protocol's DEFAULT_SEEDS, else DEFAULT_SEEDS."""
    if request.seeds is not None:
        return request.seeds
    return protocol_hook(name, "DEFAULT_SEEDS") or DEFAULT_SEEDS


def _estimate_protocol(name: str, ctx: HeldoutContext, archive: Archive,
                       store: Any) -> ProtocolEstimate:
    points_of = protocol_hook(name, "points")
    cost_of = protocol_hook(name, "seconds_per_point")
    points = points_of(ctx) if points_of else []
    store.totals[name] = len(points)
    return ProtocolEstimate(name, len(points), sum(1 for p in points if not store.done(p)),
                        cost_of(archive) if cost_of else None)

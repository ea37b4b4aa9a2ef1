"""Confirming a run's winner: one hypothesis, stated before anything trains, tested on data the
search never saw.

The winner (the run's best discovered loss by fitness, or the first of --losses) and dpo are
trained on fresh training seeds and scored on prompts the search never scored, with a sampling
seed of their own (ctx.scoring), and one hypothesis is tested:

    H1: the winner's fitness minus dpo's, dpo at its best beta of a small grid, is above 0,

one-sided at level ALPHA, blocked by training seed: selfdisco.stats.seed_blocked_difference of
the two losses' K x J per-seed per-prompt scores (digits: per image). The winner trains at the
run's beta, the one it was found at. dpo's beta is chosen on other data before the
confirmation points are looked at: dpo trains at each beta of the grid (the run's beta times
BETA_FACTORS) with tuning seeds (fresh seeds after the confirmation ones) and is scored on the
search's own prompts and sampling seed; the beta with the highest mean fitness then trains with
the confirmation seeds. Neither the confirmation prompts nor the confirmation seeds enter the
choice. A classification task (digits) has no beta: its reference, cross-entropy, is untuned,
and its test split is the confirmation data.

Cost with K seeds (DEFAULT_SEEDS = 4) and B betas (4): the winner K, dpo B x K tuning and K
confirmation points, (B + 2) x K = 24 trainings and scorings; digits 2 x K.

The statement is recorded (an archive row and a log event) before the first training; a rerun
that would test something else for the same winner is refused. The verdict is recorded after
the last point, in words: "confirmed" when the p-value is below ALPHA, else "not confirmed" (a
winner that fails on a confirmation seed is not confirmed; dpo failing leaves "no verdict").
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.errors import UserError
from selfdisco.formatting import format_fitness
from selfdisco.heldout import RECORD_SEED, HeldoutContext, HeldoutLoss, Point, session
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import HELDOUT_DONE, HELDOUT_FAILED, SCORED
from selfdisco.tasks import get_task, run_train_settings

NAME = "confirm"
DEFAULT_SEEDS = 4
ALPHA = 0.05
BETA_FACTORS = (0.25, 0.5, 1.0, 2.0)  # dpo's grid: the run's beta times these
REFERENCE = {"preference": "dpo", "classification": "cross_entropy"}
# The Statement fields that define the test (the others put them in words).
DEFINING = ("winner", "winner_beta", "reference", "reference_betas", "seeds", "tuning_seeds",
            "options", "tuning_options", "alpha")


@dataclass(frozen=True)
class Statement:
    """What is tested, on what, and how: recorded before the first training."""

    hypothesis: str
    test: str
    alpha: float
    winner: str
    winner_name: str
    winner_fitness: float | None  # its discovery fitness
    winner_beta: float
    reference: str
    reference_betas: list[float]  # dpo's grid (one beta, 0, for a loss without one)
    beta_choice: str
    seeds: list[int]  # the confirmation seeds
    tuning_seeds: list[int]  # dpo's beta is chosen with these (none without a grid)
    prompts: str  # what the confirmation points are scored on
    seen_by_search: bool
    options: dict  # the task options that score the confirmation points
    tuning_options: dict  # ... and the tuning points
    fitness: str
    cost: str

    @classmethod
    def from_dict(cls, data: dict) -> Statement:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def winner_points(self) -> list[Point]:
        return [Point(NAME, self.winner, self.winner_beta, seed) for seed in self.seeds]

    def tuning_points(self) -> list[Point]:
        return [Point(NAME, self.reference, beta, seed) for beta in self.reference_betas
                for seed in self.tuning_seeds]

    def reference_points(self, beta: float) -> list[Point]:
        return [Point(NAME, self.reference, beta, seed) for seed in self.seeds]

    def record_point(self, what: str) -> Point:
        """Where the statement ("statement") or the verdict ("verdict") is kept."""
        return Point(NAME, f"{what}:{self.winner}", 0.0, RECORD_SEED)


def state(ctx: HeldoutContext) -> tuple[Statement, HeldoutLoss, HeldoutLoss]:
    """The statement of this command's confirmation, with the winner and the reference;
    UserError when it cannot be one (no discovered loss, one seed, a bad option, no prompts
    apart from the search's that were asked for)."""
    config, scoring = ctx.config, ctx.scoring
    if scoring is None or scoring.fallback:
        why = scoring.fallback if scoring else "no held-out scoring was set up"
        raise UserError(f"confirm needs prompts the search never scored, and this run has "
                        f"none: {why}. To test on the search's own prompts with fresh training "
                        "seeds only (not a confirmation on unseen data; the statement says "
                        "so), add --prompts search")
    if len(ctx.seeds) < 2:
        raise UserError(f"--seeds {len(ctx.seeds)}: the seed-blocked test needs 2 or more "
                        f"training seeds (default {DEFAULT_SEEDS})")
    task = get_task(config.task.name)
    name = REFERENCE[task.kind]
    reference = HeldoutLoss(name, name, session.reference_catalog(task.kind)[name])
    winner = ctx.losses[0]
    if winner.code == reference.code:
        raise UserError(f"confirm tests a discovered loss against {name}, and the loss to "
                        f"confirm ({winner.id}) is {name} itself: the run has no scored "
                        "discovered loss; name one with --losses ID")
    k = len(ctx.seeds)
    beta, betas, tuning, tuning_options = 0.0, [0.0], [], {}
    versus, choice = name, f"{name} has no beta to tune (a classification loss)"
    if task.kind == "preference":
        beta = run_train_settings(config).beta
        betas = _betas(ctx.options.get("dpo_betas"), beta)
        grid = ", ".join(f"{b:g}" for b in betas)
        versus, choice = f"{name} at beta {grid}", f"{name} trains at its one beta, {grid}"
    if len(betas) > 1:
        count = _count(ctx.options.get("tuning_seeds"), k)
        tuning = session.fresh_seeds(config, k + count)[k:]
        tuning_options = dict(scoring.search_options)
        versus = f"{name} at its best beta of {grid}"
        choice = (f"{name} trains at each beta of {grid} with the {count} tuning seeds "
                  f"{', '.join(map(str, tuning))} (fresh, none of them a confirmation seed), "
                  "scored on the search's own prompts and sampling seed; the beta with the "
                  "highest mean fitness over them then trains with the confirmation seeds, so "
                  "neither the confirmation prompts nor the confirmation seeds enter the choice")
    cost = (f"{len(betas) * len(tuning) + 2 * k} trainings and scorings: the winner and {name}"
            f" once per confirmation seed ({k})"
            + (f", {name} at {len(betas)} betas once per tuning seed ({len(tuning)})"
               if tuning else ""))
    statement = Statement(
        hypothesis=(f"the fitness of {winner.id} ({winner.name}) minus the fitness of {versus},"
                    " over the confirmation seeds and prompts, is greater than 0"),
        test=(f"one-sided at level {ALPHA:g}: the mean over seeds of the two losses' "
              "difference on the same prompts (K seeds x J prompts of per-prompt scores), its "
              "standard error from the seed x prompt two-way analysis with Satterthwaite's df "
              "(selfdisco.stats.seed_blocked_difference), p from the t distribution; confirmed "
              f"when p < {ALPHA:g}"),
        alpha=ALPHA, winner=winner.id, winner_name=winner.name,
        winner_fitness=winner.fitness, winner_beta=beta, reference=name,
        reference_betas=betas, beta_choice=choice, seeds=list(ctx.seeds), tuning_seeds=tuning,
        prompts=scoring.text, seen_by_search=scoring.seen_by_search,
        options=dict(scoring.task_options), tuning_options=tuning_options,
        fitness=f"the {task.name} task's: {task.description}", cost=cost)
    return statement, winner, reference


def _betas(text: str | None, beta: float) -> list[float]:
    if not text:
        return sorted({float(f"{beta * factor:.6g}") for factor in BETA_FACTORS})
    try:
        betas = sorted({float(item) for item in text.split(",") if item.strip()})
    except ValueError:
        raise UserError(f"option dpo_betas={text!r}: give betas separated by commas, e.g. "
                        "0.025,0.05,0.1,0.2") from None
    if not betas or any(b <= 0 for b in betas):
        raise UserError(f"option dpo_betas={text!r}: every beta must be above 0")
    return betas


def _count(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"option tuning_seeds={text!r}: give a whole number, 1 or more")
    return count


def points(ctx: HeldoutContext) -> list[Point]:
    """Every training point; dpo's confirmation points at the chosen beta once it is chosen
    (at the run's beta before: the estimate counts them all the same)."""
    statement = state(ctx)[0]
    chosen = tuned_beta(statement, _rows(ctx.run_dir))[0]
    beta = statement.reference_betas[0] if chosen is None else chosen
    return (statement.winner_points() + statement.tuning_points()
            + statement.reference_points(beta))


def seconds_per_point(archive: Any) -> float | None:
    """See session.seconds_per_point."""
    return session.seconds_per_point(archive, NAME)


def run(ctx: HeldoutContext) -> None:
    """State the test (or check that it is the one stated), measure the points not yet
    recorded, choose dpo's beta, then record the verdict (see the module docstring)."""
    statement, winner, reference = state(ctx)
    preregister(ctx, statement)
    losses = {winner.id: winner, reference.id: reference}
    for point in statement.winner_points():
        _measure(ctx, point, losses[point.loss_id], statement.options, "winner")
    for point in statement.tuning_points():
        _measure(ctx, point, reference, statement.tuning_options, "tuning")
    chosen, means, pending = tuned_beta(statement, _rows(ctx.run_dir))
    if chosen is not None:
        for point in statement.reference_points(chosen):
            _measure(ctx, point, reference, statement.options, "reference")
    verdict = None if pending else decide(statement, _rows(ctx.run_dir), chosen, means)
    if verdict is None:
        _say(ctx, f"confirm: no verdict yet for {statement.winner}: points failed for a reason "
                  "that says nothing about the loss (server, timeout); rerun the command")
        return
    ctx.record(statement.record_point("verdict"), verdict)


def preregister(ctx: HeldoutContext, statement: Statement) -> None:
    """Record the statement before any of its points trains; UserError when one recorded
    for the same winner states something else."""
    point = statement.record_point("statement")
    recorded = [row for row in _rows(ctx.run_dir)
                if (row.loss_id, row.seed) == (point.loss_id, point.seed)]
    if recorded:
        before = recorded[0].metrics["statement"]
        changed = [key for key in DEFINING if before.get(key) != statement.to_dict()[key]]
        if changed:
            raise UserError(
                f"the confirmation of {statement.winner} was pre-registered with other "
                f"settings ({', '.join(changed)} differ; see the report's confirmation "
                "section): a stated test is not changed afterwards. Rerun with the settings "
                f"it states (seeds {len(before['seeds'])}, dpo betas "
                f"{','.join(f'{b:g}' for b in before['reference_betas'])}, prompts as "
                "recorded)")
        return
    ctx.record(point, {"role": "statement", "statement": statement.to_dict(),
                       "note": "", "summary": "confirm: pre-registered before any training: "
                       f"H1: {statement.hypothesis}; test: {statement.test}; seeds "
                       f"{', '.join(map(str, statement.seeds))}; prompts: {statement.prompts};"
                       f" {statement.beta_choice}; cost: {statement.cost}"})


def _measure(ctx: HeldoutContext, point: Point, loss: HeldoutLoss, options: dict,
             role: str) -> None:
    if ctx.done(point):
        return
    result = ctx.evaluate(point, loss.code, options)
    about = {"loss_name": loss.name, "role": role, "scored_with": dict(options),
             "timings": dict(result.timings)}
    if role == "tuning":  # scored on the search's prompts: not what ctx.scoring says
        about.update(scoring={"prompts": "search", "seen_by_search": True,
                              "text": "the search's own prompts and sampling seed (tuning)",
                              "task_options": dict(options)}, note="")
    per_prompt = result.metrics.get("per_prompt") if result.metrics else None
    if result.status == SCORED and per_prompt:
        seconds = sum(v for v in result.timings.values() if isinstance(v, int | float))
        ctx.record(point, {**about, "fitness": result.fitness, "fitness_stderr": result.stderr,
                           "per_prompt": list(per_prompt), "seconds": round(seconds, 2),
                           "summary": f"{role}: fitness "
                                      f"{format_fitness(result.fitness, result.stderr)}"})
    else:
        ctx.record(point, {**about, "cause": result.cause or "task",
                           "reason": result.reason or "scored without per-prompt scores"},
                   status=HELDOUT_FAILED)


def tuned_beta(statement: Statement, rows: list[Any]) -> tuple[float | None, dict, bool]:
    """(dpo's beta: the grid's one, or the one with the highest mean tuning fitness, None when
    none scored at every tuning seed; the mean per beta that did; whether a tuning point is
    still to be measured, not yet or again after a failure that says nothing about dpo)."""
    if len(statement.reference_betas) == 1:
        return statement.reference_betas[0], {}, False
    kept = _by_key(rows)
    means: dict[float, float] = {}
    pending = False
    for beta in statement.reference_betas:
        found = [kept.get((statement.reference, beta, seed)) for seed in statement.tuning_seeds]
        pending |= any(row is None or _transient(row) for row in found)
        if all(row is not None and row.status == HELDOUT_DONE for row in found):
            means[beta] = stats.mean([row.metrics["fitness"] for row in found])
    if pending or not means:
        return None, means, pending
    return max(means, key=lambda beta: (means[beta], -beta)), means, False


def decide(statement: Statement, rows: list[Any], chosen: float | None,
           means: dict[float, float]) -> dict | None:
    """The verdict's metrics from the recorded points, dpo at `chosen` (None: it failed at
    every beta), or None while a point is to be measured again; the test is the statement's."""
    base = {"role": "verdict", "note": "", "reference_beta": chosen,
            "tuning_means": {f"{b:g}": m for b, m in means.items()},
            "n_seeds": len(statement.seeds)}
    if chosen is None:
        reason = f"{statement.reference} failed at every beta of its grid"
        return {**base, "verdict": "no verdict", "reason": reason,
                "summary": f"confirm: no verdict: {reason}"}
    kept = _by_key(rows)
    winner = [kept.get((statement.winner, statement.winner_beta, s)) for s in statement.seeds]
    reference = [kept.get((statement.reference, chosen, s)) for s in statement.seeds]
    if any(row is None or _transient(row) for row in winner + reference):
        return None
    failed = [row for row in winner + reference if row.status != HELDOUT_DONE]
    mismatched = [row for row in winner + reference if row.status == HELDOUT_DONE and
                  row.metrics.get("scored_with") != statement.options]
    if failed or mismatched:
        reason = ("; ".join(f"{row.loss_id} seed {row.seed}: {row.metrics.get('reason')}"
                            for row in failed) if failed else
                  "some points were scored on other prompts than the statement's")
        verdict = ("not confirmed" if any(r.loss_id == statement.winner for r in failed)
                   else "no verdict")
        return {**base, "verdict": verdict, "reason": reason,
                "summary": f"confirm: {verdict}: {reason}"}
    a = [row.metrics["per_prompt"] for row in winner]
    b = [row.metrics["per_prompt"] for row in reference]
    if len({len(scores) for scores in a + b}) != 1:
        return {**base, "verdict": "no verdict", "reason": "the points' per-prompt scores "
                "cover different numbers of prompts", "summary": "confirm: no verdict"}
    difference = stats.seed_blocked_difference(a, b)
    p = difference.p_value()
    confirmed = p is not None and p < statement.alpha
    verdict = "confirmed" if confirmed else "not confirmed"
    interval = difference.interval(1 - 2 * statement.alpha)
    metrics = {**base, "verdict": verdict, "difference": difference.mean,
               "stderr": difference.stderr, "df": difference.df, "p_value": p,
               "n_prompts": difference.n_prompts, "basis": difference.basis,
               "lower_bound": interval[0] if interval else None,
               "winner_fitness": stats.mean([row.metrics["fitness"] for row in winner]),
               "reference_fitness": stats.mean([row.metrics["fitness"] for row in reference])}
    metrics["text"] = verdict_text(statement, metrics)
    metrics["summary"] = f"confirm: {metrics['text']}"
    return metrics


def verdict_text(statement: Statement, m: dict) -> str:
    """The verdict in plain words."""
    versus = statement.reference + (f" (beta {m['reference_beta']:g})"
                                    if len(statement.reference_betas) > 1 else "")
    df = f"{m['df']:.1f}" if m.get("df") is not None else "normal"
    p = f"{m['p_value']:.3g}" if m.get("p_value") is not None else "none"
    rule = "<" if m["verdict"] == "confirmed" else ">="
    return (f"{m['verdict']}: {statement.winner} minus {versus} = "
            f"{format_fitness(m['difference'], m['stderr'], signed=True)} (s.e.), df {df}, "
            f"{m['n_seeds']} seeds x {m['n_prompts']} prompts, one-sided p = {p} "
            f"{rule} {statement.alpha:g}")


def report_lines(rows: list[Any], run_dir: Path) -> list[str]:
    """The report's subsection: each statement as recorded before its training, then its
    verdict and the points it rests on."""
    lines = ["### Confirmation of the winner (pre-registered)", ""]
    records = [row for row in rows if row.seed == RECORD_SEED]
    verdicts = {row.loss_id: row for row in records if row.metrics.get("role") == "verdict"}
    statements = [row for row in records if row.metrics.get("role") == "statement"]
    if not statements:
        return lines + ["No confirmation has been stated yet.", ""]
    for row in statements:
        statement = Statement.from_dict(row.metrics["statement"])
        own = _own_points(statement, rows)
        first = min((r.created for r in own), default=None)
        when = (f"recorded {_clock(row.created)}, before its first point ("
                f"{_clock(first)})" if first else f"recorded {_clock(row.created)}")
        seen = " (seen by the search: not held out)" if statement.seen_by_search else ""
        lines += [f"Stated before any training ({when}):", "",
                  f"- H1: {statement.hypothesis}.", f"- Test: {statement.test}.",
                  f"- Fitness: {statement.fitness}.",
                  f"- Confirmation seeds: {', '.join(map(str, statement.seeds))}; prompts: "
                  f"{statement.prompts}{seen}.",
                  f"- {statement.reference}'s beta: {statement.beta_choice}.",
                  f"- Cost: {statement.cost}.", ""]
        verdict = verdicts.get(statement.record_point("verdict").loss_id)
        if verdict is None:
            done = sum(1 for r in own if r.status == HELDOUT_DONE)
            lines += [f"Verdict: not yet ({done} points measured).", ""]
        else:
            m = verdict.metrics
            lines += [f"**Verdict: {m.get('text') or m['verdict'] + ': ' + m.get('reason', '')}"
                      "**", ""]
        lines += _points_table(statement, own)
    return lines


def _points_table(statement: Statement, own: list[Any]) -> list[str]:
    groups: dict[tuple, list[Any]] = {}
    for row in own:
        groups.setdefault((row.metrics.get("role"), row.loss_id, row.beta), []).append(row)
    lines = ["| role | loss | beta | seeds | mean fitness (over seeds) | scored on |",
             "|---|---|---|---|---|---|"]
    for (role, loss, beta), group in sorted(groups.items(), key=lambda kv: (
            ("winner", "reference", "tuning").index(kv[0][0]) if kv[0][0] in (
                "winner", "reference", "tuning") else 3, kv[0][2])):
        values = [r.metrics["fitness"] for r in group if r.status == HELDOUT_DONE]
        mean, stderr = stats.mean_stderr(values) if values else (None, None)
        failed = len(group) - len(values)
        where = ("the search's prompts" if role == "tuning" else "the confirmation prompts")
        lines.append(f"| {role} | {loss} | {beta:g} | {len(values)}"
                     + (f" ({failed} failed)" if failed else "")
                     + f" | {format_fitness(mean, stderr, missing='-')} | {where} |")
    failures = [r for r in own if r.status != HELDOUT_DONE]
    lines.append("")
    if failures:
        lines += ["Failed points: " + "; ".join(
            f"{r.loss_id} beta {r.beta:g} seed {r.seed}: {r.metrics.get('reason', '?')}"
            for r in failures) + ".", ""]
    return lines


def _own_points(statement: Statement, rows: list[Any]) -> list[Any]:
    """The recorded points of this statement's confirmation."""
    keys = {(p.loss_id, p.beta, p.seed) for p in statement.winner_points()
            + statement.tuning_points()}
    keys |= {(statement.reference, row.beta, row.seed) for row in rows
             if row.loss_id == statement.reference and row.seed in statement.seeds}
    return [row for row in rows if (row.loss_id, row.beta, row.seed) in keys]


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _by_key(rows: list[Any]) -> dict[tuple, Any]:
    return {(row.loss_id, row.beta, row.seed): row for row in rows if row.seed != RECORD_SEED}


def _transient(row: Any) -> bool:
    return row.status != HELDOUT_DONE and row.metrics.get("cause") in session.TRANSIENT_CAUSES


def _rows(run_dir: Path) -> list[Any]:
    archive = Archive(run_dir)
    try:
        return archive.heldout_rows(NAME)
    finally:
        archive.close()


def _say(ctx: HeldoutContext, message: str) -> None:
    ctx.emit("log", level="info", message=message)

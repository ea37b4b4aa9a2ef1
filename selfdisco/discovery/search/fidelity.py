"""Multi-fidelity evaluation: every candidate gets a cheap stage, only the best the full one.

This is successive halving (Jamieson and Talwalkar, 2016) with two rungs: each valid candidate
of a generation is trained for `discovery.fidelity` of the full training (one training seed),
and the best `discovery.fidelity_keep` of them, ranked by that cheap fitness, go on to the full
evaluation (with its replicates). The baselines are measured at the same fidelity once. A
candidate below the cut still goes on when it beats every loss known at the cheap stage (the
baselines and the earlier generations' candidates) by more than 2 standard errors of the paired
difference: the cut should never drop a loss that clearly beats all known ones. (Beating the
baselines alone is not enough: in a search that refines good losses most candidates do, and the
cut would then keep nearly all of them.) A candidate stopped at the cheap stage is never trained
fully; it is recorded as failed with cause "stopped" and the rule that stopped it, and its cheap
result stays in the archive's stages table. A candidate that trained the same as an earlier row
at the cheap stage (evaluation.twin_at_stage) takes no place in the ranking: it goes on to the
loop, which records it as that row's duplicate and trains it no further.

Every cheap result and every decision is written to the archive before the next step, so a run
killed during the cheap stage resumes with the results it has and evaluates only the rest.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from selfdisco import stats
from selfdisco.config import DiscoveryConfig
from selfdisco.discovery.evaluation import twin_at_stage
from selfdisco.discovery.interface import Loop
from selfdisco.execution.records import Result
from selfdisco.formatting import format_fitness
from selfdisco.rundir.archive import Row
from selfdisco.rundir.events import PROPOSED, SCORED, TRAINING

CHEAP = "cheap"  # the one stage before the full evaluation


def enabled(discovery: DiscoveryConfig) -> bool:
    return 0 < discovery.fidelity < 1


def cheap_stage(loop: Loop, g: int, pending: list[Row]) -> list[Row]:
    """Run generation g's cheap stage for the pending rows (and the baselines, once); record
    each decision; return the rows that go on to the full evaluation."""
    f = loop.settings.fidelity
    baselines = loop.archive.rows("kind = 'burn_in' AND status = ?", (SCORED,))
    todo = [r for r in [*baselines, *pending] if loop.archive.stage(r.id, CHEAP) is None]
    if todo:
        loop.mark_stage(g, CHEAP, "start", f"{len(todo)} at {f:.0%} of the training")
        _evaluate(loop, todo, f)
        loop.mark_stage(g, CHEAP, "end", "")
    anchor = _best_known(loop, g, baselines)
    entries = {r.id: loop.archive.stage(r.id, CHEAP)
               for r in loop.archive.rows("generation = ? AND kind = 'proposal'", (g,))}
    twins = {r.id for r in pending if entries.get(r.id) and entries[r.id]["decision"] is None
             and entries[r.id]["result"]["status"] == SCORED
             and twin_at_stage(loop.archive, r, CHEAP) is not None}
    scored = [(-e["result"]["fitness"], id) for id, e in entries.items()
              if e is not None and e["result"]["status"] == SCORED and id not in twins]
    ranked = [id for _, id in sorted(scored, key=lambda s: (s[0], loop.archive.get(s[1]).seq))]
    keep = max(1, math.ceil(loop.settings.fidelity_keep * len(ranked)))
    promoted = []
    for row in pending:
        entry = loop.archive.stage(row.id, CHEAP)
        result = Result.from_dict(entry["result"])
        if row.id in twins:  # the loop records it a duplicate (Discovery._cheap_twin)
            promoted.append(row)
            continue
        if entry["decision"] is None:  # decided once; a resumed run keeps the decision
            if result.status != SCORED:
                decision, rule = "failed", f"failed at the cheap stage: {result.reason}"
            else:
                decision, rule = _rule(result, ranked.index(row.id) + 1, len(ranked), keep, f,
                                       anchor)
            entry = _decide(loop, row, entry, decision, rule)
        if entry["decision"] == "promoted":
            promoted.append(row)
        elif entry["decision"] == "failed":
            loop.record_result(row, result)
        else:
            loop.record_result(row, Result.failed(
                "stopped", entry["rule"], metrics={"fidelity": {CHEAP: entry}}))
    return promoted


def _rule(result: Result, rank: int, n: int, keep: int, f: float,
          anchor: tuple[str, Result] | None) -> tuple[str, str]:
    """(decision, the rule that made it, in words)."""
    where = (f"after {f:.0%} of the training its fitness was {format_fitness(result.fitness)}, "
             f"rank {rank} of {n}")
    if rank <= keep:
        return "promoted", f"promoted: {where} (the top {keep} go on)"
    if anchor is not None:
        name, best = anchor
        d = stats.difference(_trained(result), _trained(best))
        if d is not None and d.stderr and d.mean > stats.TIE_SE * d.stderr:
            return "promoted", (f"promoted: {where}, above the best known loss's "
                                f"{format_fitness(best.fitness)} ({name}) at the same length "
                                f"by {format_fitness(d.mean, d.stderr)}, more than "
                                f"{stats.TIE_SE:g} s.e.")
    below = (f"; the best known loss there, {anchor[0]}, had "
             f"{format_fitness(anchor[1].fitness)}"
             if anchor else "")
    return "stopped", f"not trained fully: {where} (only the top {keep} go on){below}"


def _trained(result: Result) -> SimpleNamespace:
    """A cheap result as stats reads a trained loss's row (one seed, no pooled interaction at
    this fidelity: the difference holds prompt noise only, which the cut accepts: it keeps a
    candidate, it claims nothing)."""
    return SimpleNamespace(fitness=result.fitness, stderr=result.stderr, code=True,
                           metrics=result.metrics)


def _evaluate(loop: Loop, rows: list, f: float) -> None:
    def on_done(row, result: Result) -> None:
        entry = {"fidelity": f, "result": result.to_dict(), "decision": None, "rule": None}
        loop.archive.put_stage(row.id, CHEAP, entry)
        _emit(loop, row, entry)

    def on_start(row) -> None:
        if row.kind == "proposal":
            loop.archive.update(row.id, status=TRAINING)
            loop.events.emit("candidate_status", id=row.id, status=TRAINING)

    loop.services.evaluator.evaluate(rows, lambda row, progress: None, on_done, on_start,
                                     fidelity=f)
    for row in rows:  # back in the queue until decided
        if loop.archive.get(row.id).status == TRAINING:
            loop.archive.update(row.id, status=PROPOSED)


def _decide(loop: Loop, row, entry: dict, decision: str, rule: str) -> dict:
    entry = {**entry, "decision": decision, "rule": rule}
    loop.archive.put_stage(row.id, CHEAP, entry)
    _emit(loop, row, entry)
    return entry


def _emit(loop: Loop, row, entry: dict) -> None:
    result = entry["result"]
    loop.events.emit("candidate_stage", id=row.id, stage=CHEAP, fidelity=entry["fidelity"],
                     status=result["status"], fitness=result.get("fitness"),
                     decision=entry["decision"], rule=entry["rule"])


def _best_known(loop: Loop, g: int, baselines: list) -> tuple[str, Result] | None:
    """The name and cheap-stage result of the best loss measured there before generation g (the
    baselines and earlier candidates); None when none scored."""
    earlier = loop.archive.rows("kind = 'proposal' AND generation < ?", (g,))
    measured = [(r.name, Result.from_dict(e["result"])) for r in [*baselines, *earlier]
                if (e := loop.archive.stage(r.id, CHEAP)) and e["result"]["status"] == SCORED]
    return max(measured, key=lambda m: m[1].fitness) if measured else None


def report_section(rows: list, stages: dict[str, dict]) -> list[str]:
    """The report's table of cheap-stage results and decisions (empty without stages)."""
    cheap = {id: s[CHEAP] for id, s in stages.items() if CHEAP in s}
    if not cheap:
        return []
    f = next(iter(cheap.values()))["fidelity"]
    lines = ["## Multi-fidelity stages", "",
             f"Every candidate was first trained for {f:.0%} of the training (one seed), the "
             "baselines too; only the best of each generation went on to the full evaluation.",
             "", "| id | name | cheap fitness | decision | full fitness | rule |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        entry = cheap.get(row.id)
        if entry is None:
            continue
        result = entry["result"]
        fitness = (format_fitness(result["fitness"]) if result["status"] == SCORED
                   else result["status"])
        full = format_fitness(row.fitness) if row.status == SCORED else "-"
        rule = (entry["rule"] or "baseline at the same fidelity").replace("|", "/")
        lines.append(f"| {row.id} | {row.name} | {fitness} | {entry['decision'] or '-'} | "
                     f"{full} | {rule} |")
    return [*lines, ""]

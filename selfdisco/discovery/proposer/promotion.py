"""Promotion after a generation: the discovery.self_improve mode nominates a challenger proposer
(policy: of the generation's policy adapters better than the current proposer's policy beyond
noise, the one with the highest lower confidence bound, better_policy; proposals: a proposer
LoRA trained on the run's own answers, selftrain.py), the duel decides (duel.py), and a winner
is served as the proposer from the next generation on.

A duel is recorded (archive, event) before its decision is acted on; a resumed run applies a
recorded duel's decision instead of duelling again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfdisco import stats
from selfdisco.discovery.interface import Loop
from selfdisco.discovery.proposer import duel, selftrain
from selfdisco.rundir.events import SCORED
from selfdisco.seeds import derive


@dataclass
class Challenger:
    id: str  # the name rows record as their proposer
    adapter: str
    fitness: float | None = None  # its policy's task fitness, when it is a policy
    stderr: float | None = None

    @property
    def model(self) -> str:
        """The adapter's name on the server."""
        return f"proposer-{self.id}"


def promote(loop: Loop, g: int) -> None:
    """Nominate, duel and promote after generation g."""
    if loop.settings.self_improve == "off" or not loop.can_self_improve:
        return
    recorded = loop.archive.duels().get(g)
    if recorded is not None:
        record = duel.DuelRecord.from_json(recorded)
        if record.promoted and loop.state.proposer_id != record.challenger:
            challenger = Challenger(record.challenger, record.adapter,
                                    (record.fitness or {}).get("challenger"))
            if _serve(loop, challenger):
                _apply(loop, challenger, g)
        return
    challenger = (_policy_challenger(loop, g) if loop.settings.self_improve == "policy"
                  else _trained_challenger(loop, g))
    if challenger is None or not _serve(loop, challenger):
        return
    record = _duel(loop, g, challenger)
    loop.archive.put_duel(g, record.to_json())
    loop.events.emit("proposer_duel", generation=g, current=record.current,
                     challenger=record.challenger, samples=record.samples,
                     current_valid=record.valid("current"),
                     challenger_valid=record.valid("challenger"),
                     difference=record.difference, stderr=record.stderr,
                     promoted=record.promoted, reason=record.reason)
    if record.promoted:
        _apply(loop, challenger, g)
    elif loop.services.adapters is not None:
        loop.services.adapters.unload_adapter(challenger.model)


def _policy_challenger(loop: Loop, g: int) -> Challenger | None:
    """Generation g's policy better than the current proposer's (better_policy), or None
    (logged when the generation has policies)."""
    scored = loop.archive.rows("status = ?", (SCORED,))
    candidates = [r for r in scored if r.generation == g and r.metrics.get("adapter")]
    current = next((r for r in scored if r.id == loop.state.proposer_id), None)
    best = better_policy(current, candidates, scored)
    if best is None:
        if candidates:
            loop.events.emit("log", level="info", message=(
                f"no policy challenger after generation {g}: " + (
                    f"none of its {len(candidates)} policies is better than {current.id}'s "
                    f"beyond noise (Holm at {stats.FAMILY_ALPHA:g}, one-sided, seed-blocked)"
                    if current is not None else
                    f"the current proposer {loop.state.proposer_id} has no scored policy to "
                    "compare with")))
        return None
    return Challenger(best.id, best.metrics["adapter"], best.fitness, best.stderr)


def better_policy(current: Any, candidates: list, rows: list,
                  alpha: float = stats.FAMILY_ALPHA) -> Any | None:
    """The candidate policy that challenges the current proposer, chosen with its error.

    Args:
        current: the current proposer's policy row (the untrained policy's for the base, a
            promoted candidate's after a promotion: the row state.proposer_fitness is read
            from); None when it has no scored row.
        candidates: the generation's scored policy rows.
        rows: the run's scored rows, for the pooled interaction and seed variance.
        alpha: the family-wise level over the candidates.

    Returns:
        Of the candidates better than `current` at family-wise level alpha (Holm, one-sided,
        blocked by training seed and paired by prompt: stats.better_than_reference), the one
        whose difference has the highest one-sided lower confidence bound at 1 - alpha; None
        when none is better beyond noise (the raw maximum is not enough: the winner's curse),
        or without a current row to compare with.
    """
    if current is None or not candidates:
        return None
    interaction, seed_pool = stats.run_interaction(rows), stats.run_seed_pool(rows)
    differences = {r.id: stats.difference(r, current, interaction, seed_pool)
                   for r in candidates}
    better = stats.better_than_reference(
        {id: d for id, d in differences.items() if d is not None}, alpha)
    if not better:
        return None
    return max((r for r in candidates if r.id in better),
               key=lambda r: differences[r.id].interval(1 - 2 * alpha)[0])


def _trained_challenger(loop: Loop, g: int) -> Challenger | None:
    """A proposer LoRA trained on the run's pairs so far (after a round of practice), or None
    (too few pairs, or training failed: logged)."""
    name = f"g{g:02d}"
    _practice(loop, g)
    rows = loop.archive.rows()
    pairs = selftrain.build_pairs(loop.run_dir, rows, loop.archive.duels())
    if len(pairs) < loop.settings.proposer_min_pairs:
        loop.events.emit("log", level="info", message=(
            f"no proposer training after generation {g}: {len(pairs)} preference pair(s) from "
            f"its answers, {loop.settings.proposer_min_pairs} needed "
            "(discovery.proposer_min_pairs)"))
        return None
    loss = selftrain.best_loss(rows, loop.services.catalog)
    path = selftrain.proposer_dir(loop.run_dir) / name / "pairs.jsonl"
    selftrain.write_pairs(path, pairs)
    loop.mark_stage(g, "self_train", "start",
                    f"{len(pairs)} pairs under {loss['name']} ({loss['why']})")
    trainer = loop.services.proposer_trainer or selftrain.default_trainer(loop.config, loop.run_dir)
    trained = trainer.train(name, path, loss, derive(loop.config.seed, "proposer", g),
                            loop.settings.proposer_steps)
    loop.mark_stage(g, "self_train", "end", trained.reason)
    if not trained.ok:
        loop.events.emit("log", level="error",
                         message=f"proposer training after generation {g} failed: "
                                 f"{trained.reason}")
        return None
    return Challenger(f"self-{name}", trained.adapter)


def _practice(loop: Loop, g: int) -> None:
    """The current proposer answers the next generation's context duel_samples times (seeded,
    screened only); kept for pairs. A resumed run keeps the round it has."""
    path = selftrain.proposer_dir(loop.run_dir) / f"g{g:02d}" / "practice.json"
    if path.is_file():
        return
    messages = loop.proposer_messages()
    selftrain.save_context(loop.run_dir, f"practice-g{g:02d}", messages)
    seed = derive(loop.config.seed, "practice", g)
    texts = loop.ask_proposer(messages, loop.settings.duel_samples, seed,
                              loop.state.proposer_adapter)
    selftrain.save_practice(loop.run_dir, g, texts, _outcomes(loop, texts), seed)


def _outcomes(loop: Loop, texts: list[str]) -> list[str]:
    return duel.outcomes(texts, loop.services.parse, loop.services.screen,
                         list(loop.state.fingerprints.values()),
                         loop.settings.duplicate_tolerance, within=loop.archive.reach(),
                         timeout_s=loop.settings.screen_timeout_s, beta=loop.services.beta)


def _serve(loop: Loop, challenger: Challenger) -> bool:
    if loop.services.adapters is None:
        return True
    try:
        loop.services.adapters.load_adapter(challenger.model, challenger.adapter)
    except Exception as err:  # noqa: BLE001 - keep the current proposer
        loop.events.emit("log", level="error",
                         message=f"could not serve {challenger.id} as a proposer: {err}")
        return False
    return True


def _duel(loop: Loop, g: int, challenger: Challenger) -> duel.DuelRecord:
    """Both proposers answer the next generation's context with the same seeds; screened."""
    n, seed = loop.settings.duel_samples, derive(loop.config.seed, "duel", g)
    messages = loop.proposer_messages()
    selftrain.save_context(loop.run_dir, f"duel-g{g:02d}", messages)
    loop.mark_stage(g, "duel", "start",
                    f"{loop.state.proposer_id} vs {challenger.id}, {n} answers each")
    answers = {side: loop.ask_proposer(messages, n, seed, model)
               for side, model in (("current", loop.state.proposer_adapter),
                                   ("challenger", challenger.model))}
    found = {side: _outcomes(loop, texts) for side, texts in answers.items()}
    scored = loop.archive.rows("status = ?", (SCORED,))
    by_id = {r.id: r for r in scored}
    fitness = duel.fitness_check(by_id.get(loop.state.proposer_id), by_id.get(challenger.id),
                                 scored)
    decision = duel.decide(found["current"], found["challenger"], fitness)
    loop.mark_stage(g, "duel", "end", "promoted" if decision.promoted else "not promoted")
    return duel.DuelRecord(
        generation=g, current=loop.state.proposer_id, challenger=challenger.id,
        adapter=challenger.adapter, samples=n, seed=seed, current_outcomes=found["current"],
        challenger_outcomes=found["challenger"], difference=decision.difference,
        stderr=decision.stderr, promoted=decision.promoted, reason=decision.reason,
        fitness=fitness, current_answers=answers["current"],
        challenger_answers=answers["challenger"], p_value=decision.p_value)


def _apply(loop: Loop, challenger: Challenger, g: int) -> None:
    """Serve the challenger as the proposer (recorded first, then announced)."""
    if loop.state.proposer_adapter and loop.services.adapters is not None:
        loop.services.adapters.unload_adapter(loop.state.proposer_adapter)
    loop.state.proposer_id, loop.state.proposer_adapter = challenger.id, challenger.model
    if challenger.fitness is not None:
        loop.state.proposer_fitness = challenger.fitness
    loop.archive.set_meta("proposer", {"id": challenger.id, "model": challenger.model,
                                       "adapter": challenger.adapter,
                                       "fitness": challenger.fitness, "generation": g})
    loop.events.emit("proposer_changed", proposer=challenger.id, adapter=challenger.adapter,
                     fitness=challenger.fitness)

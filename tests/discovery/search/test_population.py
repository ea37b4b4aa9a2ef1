"""The islands population: membership, migration and parent sampling, deterministic for a
seed, and the proposer's per-island contexts through the loop."""

from __future__ import annotations

import json

from loop_helpers import DIGITS_ANSWERS, ScriptedProposer, digits_answer, make_digits_loop

from selfdisco.config import load_config
from selfdisco.discovery.search import population
from selfdisco.rundir.archive import Row

K, ISLANDS = 2, 2


def row(g: int, slot: int, fitness: float | None, seq: int) -> Row:
    return Row(id=f"g{g:02d}-c{slot + 1}", seq=seq, generation=g, kind="proposal", slot=slot,
               status="scored" if fitness is not None else "failed", fitness=fitness)


def history() -> list[Row]:
    """Three generations of K = 2 on 2 islands: slot s of generation g is on island
    ((g - 1) * 2 + s) % 2, i.e. slot 0 on island 0, slot 1 on island 1."""
    fitness = {(1, 0): 0.5, (1, 1): 0.9, (2, 0): 0.6, (2, 1): None, (3, 0): 0.4, (3, 1): 0.7}
    return [row(g, s, f, seq) for seq, ((g, s), f) in enumerate(fitness.items(), start=10)]


def test_slots_spread_over_islands_even_when_k_is_smaller():
    assert [population.island_of(g, s, 2, 3) for g in (1, 2, 3) for s in (0, 1)] == [
        0, 1, 2, 0, 1, 2]


def test_migration_moves_each_islands_best_to_the_next_and_is_deterministic():
    rows = history()
    assert population.migration_generations(5, 2) == [3, 5]
    assert population.migrants(rows, 2, K, ISLANDS, 2) == []
    moves = population.migrants(rows, 3, K, ISLANDS, 2)
    assert moves == [("g02-c1", 0, 1), ("g01-c2", 1, 0)]  # island 0's best 0.6, island 1's 0.9
    held = population.members(rows, 3, K, ISLANDS, 2)
    assert [r.id for r in held[0]] == ["g01-c1", "g02-c1", "g01-c2"]
    assert [r.id for r in held[1]] == ["g01-c2", "g02-c2", "g02-c1"]
    assert population.members(rows, 3, K, ISLANDS, 2) == held  # a function of the archive
    later = population.members(rows, 4, K, ISLANDS, 2)  # no migration at 4: only own rows
    assert [r.id for r in later[0]] == ["g01-c1", "g02-c1", "g01-c2", "g03-c1"]


def test_parent_sampling_is_deterministic_for_a_seed_and_favours_the_fittest():
    held = [row(1, 0, f, seq) for seq, f in enumerate([0.1, 0.2, 0.3, 0.4, 0.9])]
    first = population.sample_parents(held, 2, seed=7)
    assert population.sample_parents(held, 2, seed=7) == first
    assert [r.seq for r in first] == sorted(r.seq for r in first)  # archive order
    picks = [r.fitness for seed in range(300) for r in population.sample_parents(held, 1, seed)]
    assert picks.count(0.9) > picks.count(0.1) * 2
    assert population.sample_parents(held, 9, seed=1) == held  # all, when asked for more


def test_the_context_shows_sampled_parents_and_the_islands_latest():
    config = load_config("smoke", overrides={"discovery": {
        "islands": ISLANDS, "candidates_per_generation": K, "parents": 1}})
    shown = population.context_rows(history(), 4, 1, config.discovery, seed=3)
    held = population.members(history(), 4, K, ISLANDS, 2)[1]
    assert set(r.id for r in shown) <= set(r.id for r in held)
    own_latest = [r.id for r in held if population.island_of(r.generation, r.slot, K,
                                                             ISLANDS) == 1][-2:]
    assert set(own_latest) <= {r.id for r in shown}
    assert shown == population.context_rows(history(), 4, 1, config.discovery, seed=3)


def test_same_context_groups_slots_into_one_request_each():
    a, b = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    assert population.same_context({0: a, 1: b, 2: a}, [0, 1, 2]) == [[0, 2], [1]]
    assert population.same_context({0: a}, []) == []


def run_islands(run_dir, evaluator) -> ScriptedProposer:
    answers = DIGITS_ANSWERS + [
        digits_answer(f"tempered_{t}", f"def tempered_{t}(logits, targets):\n"
                      f"    return F.cross_entropy(logits / {t}, targets, reduction='none')\n")
        for t in (1.5, 2.5, 3.5, 4.5)]
    proposer = ScriptedProposer(answers)
    make_digits_loop(run_dir, proposer, evaluator, generations=3, islands=ISLANDS,
                     candidates_per_generation=K, migration_interval=2, parents=1,
                     max_resamples=0).run()
    return proposer


def test_islands_through_the_loop_are_replayed_identically(tmp_path, digits_evaluator):
    first = run_islands(tmp_path / "a", digits_evaluator)
    second = run_islands(tmp_path / "b", digits_evaluator)
    requests = [json.dumps(r["messages"]) for r in first.requests]
    assert requests == [json.dumps(r["messages"]) for r in second.requests]
    # Generation 1: both islands empty, one request for both slots; then one per island.
    assert [r["n"] for r in first.requests] == [2, 1, 1, 1, 1]
    assert first.requests[1]["messages"] != first.requests[2]["messages"]

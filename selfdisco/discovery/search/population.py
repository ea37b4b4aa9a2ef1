"""Islands: the proposer's context comes from a population instead of one linear history.

With discovery.islands = N > 1, slot s of generation g belongs to island ((g - 1) * K + s) % N
(K candidates per generation), so a generation's K candidates come from different islands and
every island gets proposals even when K < N. An island's members are the evaluated proposals
of its slots, plus migrants: every `migration_interval` generations each island's best member
joins the next island (a ring). A slot's context shows the baselines and `parents` members of
its island, sampled without replacement with weight 1 / rank (the best most often), plus the
island's latest evaluated proposals, so the proposer still sees what just failed.

Everything is a function of the archive and the run's seed (membership from slots, migrants
from fitness, the sample from derive(seed, "parents", g, island)), so a resumed or replayed run
shows the proposer the same parents.
"""

from __future__ import annotations

import json
import random

from selfdisco.config import DiscoveryConfig
from selfdisco.discovery.interface import Loop
from selfdisco.rundir.events import EVALUATED, SCORED
from selfdisco.seeds import derive

LATEST = 2  # the island's latest evaluated proposals, always shown


def island_of(g: int, slot: int, k: int, islands: int) -> int:
    return ((g - 1) * k + slot) % islands


def migration_generations(g: int, interval: int) -> list[int]:
    """The generations up to g at whose start islands exchange their best (not the first)."""
    return [m for m in range(2, g + 1) if (m - 1) % interval == 0]


def members(rows: list, g: int, k: int, islands: int, interval: int) -> dict[int, list]:
    """Island -> the evaluated proposals it holds when generation g is proposed (its own of
    earlier generations and the migrants it received, in the order they came)."""
    return _evolve(rows, g, k, islands, interval)[0]


def migrants(rows: list, g: int, k: int, islands: int, interval: int) -> list[tuple]:
    """The migration at the start of generation g: (candidate id, from island, to island)."""
    return [move[1:] for move in _evolve(rows, g, k, islands, interval)[1] if move[0] == g]


def _evolve(rows: list, g: int, k: int, islands: int, interval: int) -> tuple[dict, list]:
    """Replay the population up to the start of generation g: (held, moves)."""
    proposals = [r for r in rows if r.kind == "proposal" and r.status in EVALUATED
                 and r.slot is not None]
    held: dict[int, list] = {i: [] for i in range(islands)}
    moves: list[tuple] = []
    at = set(migration_generations(g, interval))
    for m in range(1, g + 1):
        for r in proposals:
            if r.generation == m - 1:
                held[_home(r, k, islands)].append(r)
        if m in at:
            bests = [_best(held[i]) for i in range(islands)]
            for i, best in enumerate(bests):
                target = (i + 1) % islands
                if best is not None and best not in held[target]:
                    held[target].append(best)
                    moves.append((m, best.id, i, target))
    return held, moves


def sample_parents(held: list, count: int, seed: int) -> list:
    """`count` scored members drawn without replacement with weight 1 / rank (rank 1: the
    fittest); in archive order."""
    ranked = sorted((r for r in held if r.status == SCORED), key=lambda r: (-r.fitness, r.seq))
    rng = random.Random(seed)
    pool = list(enumerate(ranked, start=1))
    chosen = []
    while pool and len(chosen) < count:
        pick = rng.choices(range(len(pool)), weights=[1 / rank for rank, _ in pool])[0]
        chosen.append(pool.pop(pick)[1])
    return sorted(chosen, key=lambda r: r.seq)


def context_rows(rows: list, g: int, island: int, d: DiscoveryConfig, seed: int) -> list:
    """The proposals a slot of `island` is shown in generation g: sampled parents and the
    island's latest evaluated ones."""
    k = d.candidates_per_generation
    held = members(rows, g, k, d.islands, d.migration_interval)[island]
    parents = sample_parents(held, d.parents, derive(seed, "parents", g, island))
    own = [r for r in held if _home(r, k, d.islands) == island]
    shown = {r.id for r in parents} | {r.id for r in own[-LATEST:]}
    return [r for r in held if r.id in shown]


def _home(row, k: int, islands: int) -> int:
    return island_of(row.generation, row.slot, k, islands)


def _best(held: list):
    scored = [r for r in held if r.status == SCORED]
    return max(scored, key=lambda r: (r.fitness, -r.seq)) if scored else None


def same_context(contexts: dict[int, list[dict]], slots: list[int]) -> list[list[int]]:
    """The slots grouped by identical messages, in slot order: each group is one request for
    n answers (equal prompts must not be asked twice with one seed: the answers would repeat)."""
    groups: dict[str, list[int]] = {}
    for s in slots:
        groups.setdefault(json.dumps(contexts[s], sort_keys=True), []).append(s)
    return list(groups.values())


def slot_contexts(loop: Loop, g: int, messages: list[dict]) -> dict[int, list[dict]]:
    """Slot -> the proposer's messages for generation g: `messages` (one history) for every
    slot with one island, else the slot's island context (context_rows); a migration at the
    start of g is logged."""
    d, k = loop.settings, loop.settings.candidates_per_generation
    if d.islands <= 1:
        return {s: messages for s in range(k)}
    rows = loop.archive.rows()
    for id, source, target in migrants(rows, g, k, d.islands, d.migration_interval):
        loop.events.emit("log", level="info", message=(
            f"migration before generation {g}: {id} (island {source}) joins island {target}"))
    contexts: dict[int, list[dict]] = {}
    for island in {island_of(g, s, k, d.islands) for s in range(k)}:
        shown = context_rows(rows, g, island, d, loop.config.seed)
        contexts[island] = loop.proposer_messages(shown)
    return {s: contexts[island_of(g, s, k, d.islands)] for s in range(k)}

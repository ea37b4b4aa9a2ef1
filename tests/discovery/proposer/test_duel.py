"""The proposer duel: its rule (the challenger must win), how often it decides right in a
simulation, the policy challenger chosen with its standard error, the fitness side blocked by
seed, and in the loop a worse challenger kept out, a winner promoted, replay and resume reaching
the same decision (scripted proposers that answer by served model; no model server)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
from loop_helpers import CurveEvaluator, PromptCurveEvaluator, answer, make_loop

from selfdisco import stats
from selfdisco.config import DiscoveryConfig
from selfdisco.discovery.evaluation import RecordedEvaluator
from selfdisco.discovery.interface import State
from selfdisco.discovery.proposer import duel, promotion
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import BaseClient
from selfdisco.llm.protocol import Completion
from selfdisco.llm.replay import ReplayClient
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import SCORED, EventWriter, read_events

V, P, D = duel.VALID, "parse", "duplicate"

# Distinct losses (each trains under CurveEvaluator); the base model writes these in order.
GOOD = [answer(f"good_{i}", expr) for i, expr in enumerate([
    "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)",
    "1.0 * torch.relu(1 - 2.0 * x)",
    "1.0 * torch.sigmoid(-1.5 * x)",
    "0.3 * torch.exp(-2.0 * x) + 0.7 * F.softplus(-1.0 * x)",
    "0.6 * torch.sigmoid(-3.0 * x) + 0.4 * torch.relu(0.5 - x)",
    "0.2 * torch.exp(-0.5 * x) + 0.8 * torch.sigmoid(-2.5 * x)",
    "1.0 * torch.square(torch.relu(1.0 - 1.5 * x))",
    "0.9 * F.softplus(-0.5 * x) + 0.1 * torch.abs(1.0 - x)",
    "0.4 * torch.exp(-3.0 * x) + 0.6 * torch.relu(2.0 - x)",
    "0.5 * torch.sigmoid(-0.5 * x) + 0.5 * torch.square(torch.relu(0.5 - x))",
    *(f"1.0 * F.softplus(-{k} * x)" for k in ("1.5", "2.5", "3.5", "4.5")),
    *(f"1.0 * torch.sigmoid(-{k} * x)" for k in ("0.7", "2.2", "3.3")),
])]


class ByModel(BaseClient):
    """Answers from one list for the base model and another for any adapter; records requests."""

    def __init__(self, base: list[str], adapter: list[str], recorder: Recorder | None = None):
        self.queues = {None: list(base), "adapter": list(adapter)}
        self.recorder = recorder
        self.model = "scripted"
        self.requests: list[dict] = []
        self.adapters: dict[str, str] = {}
        self.lock = threading.Lock()

    def _answer(self, request: dict) -> list[Completion]:
        with self.lock:
            self.requests.append(request)
            queue = self.queues[None if request["model"] is None else "adapter"]
            texts = [queue.pop(0) if queue else "" for _ in range(request.get("n", 1))]
        return [Completion(text=t, finish_reason="stop") for t in texts]

    def load_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)


def test_the_challenger_must_win_the_rate_test():
    decision = duel.decide([V, V, V, V], [P, P, D, P])
    assert not decision.promoted and decision.difference == -1.0 and decision.p_value == 1.0
    assert "not shown higher" in decision.reason
    assert not duel.decide([V, P] * 4, [P, V] * 4).promoted  # a tie no longer promotes
    assert not duel.decide([V] * 8, [V] * 8).promoted  # nor does equal and perfect
    # four answers valid for the challenger only: p = 1/16 > 0.05; five: 1/32
    assert duel.rate_test([P] * 4, [V] * 4) == (4, 0, 0.0625)
    assert not duel.decide([P] * 4, [V] * 4).promoted
    five = duel.decide([P] * 5 + [V], [V] * 6)
    assert five.promoted and five.p_value == pytest.approx(1 / 32)
    assert five.reason.startswith("valid-and-novel rate higher: 5 answers valid and novel for "
                                  "the challenger only, 0 for the current proposer only")
    # answers valid on both sides say nothing: 6 of 8 discordant pairs won is p 0.14
    assert duel.rate_test([V] * 4 + [V, V, P, P, P, P, P, P], [V] * 4 + [P, P] + [V] * 6) == (
        6, 2, pytest.approx(0.14453125))


def test_the_fitness_must_be_higher_where_both_policies_were_scored():
    won = ([P] * 6, [V] * 6)
    higher = {"difference": 0.05, "stderr": 0.01, "p_value": 0.001, "omitted": []}
    assert duel.decide(*won, higher).promoted
    assert "fitness +0.0500 ± 0.0100, one-sided p 0.001" in duel.decide(*won, higher).reason
    within = {**higher, "difference": 0.01, "p_value": 0.16}
    decision = duel.decide(*won, within)
    assert not decision.promoted and decision.reason.endswith(
        "fitness +0.0100 ± 0.0100 not shown higher: one-sided p 0.16 > 0.05")
    no_claim = {**higher, "p_value": None, "omitted": ["seed"]}
    assert "leaves out the seed noise" in duel.decide(*won, no_claim).reason
    assert not duel.decide(*won, no_claim).promoted
    assert not duel.decide([V] * 6, [V] * 6, higher).promoted  # fitness alone is not a win


SIMULATED = 2000  # duels per case


def promoted_share(current_rate: float, challenger_rate: float, seed: int) -> float:
    """The share of SIMULATED duels at the default duel_samples that promote the challenger,
    each answer valid and novel independently at its side's rate."""
    n = DiscoveryConfig().duel_samples
    rng = np.random.default_rng(seed)
    promoted = 0
    for _ in range(SIMULATED):
        current = [V if u else P for u in rng.random(n) < current_rate]
        challenger = [V if u else P for u in rng.random(n) < challenger_rate]
        promoted += duel.decide(current, challenger)[0]
    return promoted / SIMULATED


def test_a_duel_decides_in_a_simulation():
    """Measured at 32 answers a side, a challenger at 0.25 against the current's 0.75: 0.000
    promoted; 0.75 against 0.25: 0.991; equal rates of 0.5: 0.029, of 0.75: 0.027 (exact: 0,
    0.990, 0.031, 0.027). The earlier rule at 4 answers promoted the first 0.63 of the time."""
    shares = {(c, x): promoted_share(c, x, seed) for seed, (c, x) in enumerate(
        [(0.75, 0.25), (0.25, 0.75), (0.5, 0.5), (0.75, 0.75)])}
    assert DiscoveryConfig().duel_samples >= 32, shares
    assert shares[0.75, 0.25] <= 0.05, shares  # the worse challenger blocked 95% of the time
    assert shares[0.25, 0.75] >= 0.95, shares  # the better one promoted
    # equal rates: at most ALPHA (the exact test keeps it, conservatively), with three binomial
    # standard errors of a share of SIMULATED
    slack = 3 * stats.proportion_stderr(duel.ALPHA, SIMULATED)
    assert shares[0.5, 0.5] <= duel.ALPHA + slack, shares
    assert shares[0.75, 0.75] <= duel.ALPHA + slack, shares


PROMPTS = 32


def spread(rng: np.random.Generator, sd: float) -> np.ndarray:
    """PROMPTS offsets of mean exactly 0 and standard deviation exactly sd."""
    x = rng.normal(size=PROMPTS)
    x -= x.mean()
    return x / x.std(ddof=1) * sd


def add_policy(archive: Archive, id: str, generation: int, per_seed: list[np.ndarray]) -> None:
    """A scored row from its per-seed per-prompt scores (the untrained policy when id is
    "base"), as the loop records one."""
    means = [float(s.mean()) for s in per_seed]
    metrics = {"per_prompt": [float(v) for v in np.mean(per_seed, axis=0)]}
    if len(per_seed) > 1:
        metrics["replicates"] = [{"replicate": k, "train_seed": k, "fitness": f, "stderr": 0.01,
                                  "per_prompt": [float(v) for v in s]}
                                 for k, (f, s) in enumerate(zip(means, per_seed, strict=True))]
    if generation:
        metrics["adapter"] = f"/adapters/{id}"
    kind = "base" if id == "base" else "burn_in" if not generation else "proposal"
    archive.add(id, generation, kind, SCORED, name=id, code=None if id == "base" else "code",
                fitness=float(np.mean(means)), stderr=0.01, metrics=metrics)


def policy_run(run_dir, shifts: list[float], sds: list[float]) -> SimpleNamespace:
    """A real archive: the untrained policy (the current proposer), dpo and hinge on two
    shared training seeds, and generation 1's policies at `shifts` above the untrained one
    with per-prompt noise `sds`; with the loop state that promotion reads."""
    rng = np.random.default_rng(0)
    archive = Archive(run_dir)
    base = 0.5 + spread(rng, 0.2)
    add_policy(archive, "base", 0, [base])
    for id, shift in (("burn-dpo", 0.05), ("burn-hinge", 0.04)):
        add_policy(archive, id, 0, [base + shift + seed + spread(rng, 0.02)
                                    for seed in (0.0, 0.01)])
    for i, (shift, sd) in enumerate(zip(shifts, sds, strict=True), 1):
        add_policy(archive, f"g01-c{i}", 1, [base + shift + spread(rng, sd)])
    state = State(proposer_fitness=archive.get("base").fitness)
    return SimpleNamespace(archive=archive, state=state, events=EventWriter(run_dir),
                           run_dir=run_dir)


def test_the_policy_challenger_is_better_beyond_noise(tmp_path):
    within = [0.006, -0.004, 0.002, 0.0]
    loop = policy_run(tmp_path / "within", within, [0.05] * 4)
    best = max(loop.archive.rows("generation = 1"), key=lambda r: r.fitness)
    assert best.id == "g01-c1" and best.fitness > loop.state.proposer_fitness
    assert promotion._policy_challenger(loop, 1) is None  # the raw maximum is not enough
    said = [e["message"] for e in read_events(loop.run_dir / "events.jsonl")]
    assert said == ["no policy challenger after generation 1: none of its 4 policies is better "
                    "than base's beyond noise (Holm at 0.05, one-sided, seed-blocked)"]
    # two clearly better: the raw maximum (c5, +0.15 with per-prompt noise 0.3) and a surer
    # one (c6, +0.12 with 0.02); the higher lower bound wins
    loop = policy_run(tmp_path / "clear", [*within, 0.15, 0.12], [0.05] * 4 + [0.3, 0.02])
    assert max(loop.archive.rows("generation = 1"), key=lambda r: r.fitness).id == "g01-c5"
    challenger = promotion._policy_challenger(loop, 1)
    assert challenger is not None and challenger.id == "g01-c6"
    assert challenger.adapter == "/adapters/g01-c6"
    assert challenger.fitness == loop.archive.get("g01-c6").fitness
    rows = loop.archive.rows()
    current, c5 = loop.archive.get("base"), loop.archive.get("g01-c5")
    assert promotion.better_policy(current, [c5], rows) is c5  # better on its own
    assert promotion.better_policy(None, [c5], rows) is None  # no current row to compare with


def test_the_fitness_check_is_blocked_by_training_seed(tmp_path):
    loop = policy_run(tmp_path / "run", [0.12], [0.02])
    rows = loop.archive.rows()
    base, policy = loop.archive.get("base"), loop.archive.get("g01-c1")
    # against the untrained policy: the trained side's seed variance (dpo's and hinge's two
    # seeds) is in the standard error, so the comparison can count as higher
    check = duel.fitness_check(base, policy, rows)
    pool = stats.run_seed_pool(rows)
    prompt_only = stats.difference(policy, base).stderr
    assert check["stderr"] ** 2 == pytest.approx(prompt_only ** 2 + pool.variance)
    assert check["omitted"] == [] and check["p_value"] < duel.ALPHA
    # two trained policies on three shared seeds with a large common seed effect (0.1): the
    # difference is read seed by seed and the effect drops out of it
    rng = np.random.default_rng(1)
    archive, common = Archive(tmp_path / "trained"), 0.5 + spread(rng, 0.2)
    for id, shift in (("g01-c1", 0.0), ("g01-c2", 0.02)):
        add_policy(archive, id, 1, [common + shift + seed + spread(rng, 0.01)
                                    for seed in (0.0, 0.1, -0.1)])
    current, challenger = archive.get("g01-c1"), archive.get("g01-c2")
    check = duel.fitness_check(current, challenger, archive.rows())
    assert check["seeds"] == 3 and check["difference"] == pytest.approx(0.02)
    own = np.std([f for f, _ in stats.replicates_of(challenger)], ddof=1) / np.sqrt(3)
    assert check["stderr"] < 0.01 < own  # the row's own error carries the seed effect


def test_a_worse_challenger_is_not_promoted(tmp_path):
    run = tmp_path / "run"
    # the policy of generation 1 beats the base on fitness, but as a proposer it writes
    # nothing usable: the duel keeps the base
    proposer = ByModel(GOOD, ["no json here"] * 20)
    loop = make_loop(run, proposer, PromptCurveEvaluator(), duel_samples=4)
    assert loop.run() == "generation limit reached"
    archive = Archive(run)
    record = duel.DuelRecord.from_json(archive.duels()[1])
    assert record.current == "base" and record.challenger.startswith("g01-")
    assert record.challenger_outcomes == [P] * 4 and record.current_outcomes == [V] * 4
    assert not record.promoted and record.p_value == 1.0
    assert record.reason.startswith("valid-and-novel rate not shown higher")
    # its fitness is higher, blocked by seed against the untrained policy
    assert record.fitness["difference"] > 0 and record.fitness["omitted"] == []
    assert record.fitness["p_value"] < duel.ALPHA
    assert {r.proposer for r in archive.rows("generation = 2")} == {"base"}
    assert archive.get_meta("proposer") is None
    events = list(read_events(run / "events.jsonl"))
    duels = [e for e in events if e["type"] == "proposer_duel"]
    assert [(d["generation"], d["promoted"], d["challenger_valid"]) for d in duels][0] == (
        1, False, 0)
    assert not any(e["type"] == "proposer_changed" for e in events)
    # both sides answered the same messages with the same seed
    asks = [r for r in proposer.requests if r["n"] == 4]
    assert len(asks) >= 2 and asks[0]["messages"] == asks[1]["messages"]
    assert asks[0]["seed"] == asks[1]["seed"] and asks[0]["model"] is None
    assert asks[1]["model"] == f"proposer-{record.challenger}"
    assert proposer.adapters == {}  # the losing challenger is unloaded


def test_no_policy_challenges_without_a_measured_prompt_part(tmp_path):
    """CurveEvaluator records no per-prompt scores: no comparison with the base can claim
    "better", so no policy is nominated and no duel is fought."""
    run = tmp_path / "run"
    make_loop(run, ByModel(GOOD, GOOD[6:]), CurveEvaluator(), duel_samples=5).run()
    assert Archive(run).duels() == {}


# The base model writes generation 1's two losses and then nothing usable; any adapter writes
# distinct valid losses: with 5 answers a side the challenger wins 5 of 5 (p = 1/32).
WINNER = {"base": GOOD[:2], "adapter": GOOD[2:]}


def test_a_challenger_that_wins_is_promoted_and_proposes_next(tmp_path):
    run = tmp_path / "run"
    loop = make_loop(run, ByModel(WINNER["base"], WINNER["adapter"]), PromptCurveEvaluator(),
                     duel_samples=5)
    loop.run()
    archive = Archive(run)
    record = duel.DuelRecord.from_json(archive.duels()[1])
    assert record.promoted, record.reason
    assert record.valid("challenger") == 5 and record.valid("current") == 0
    assert record.p_value == pytest.approx(1 / 32) and "fitness +" in record.reason
    assert {r.proposer for r in archive.rows("generation = 2")} == {record.challenger}
    assert loop.state.proposer_fitness == archive.get(record.challenger).fitness
    last = [d for d in archive.duels().values() if d["promoted"]][-1]
    assert archive.get_meta("proposer")["id"] == last["challenger"]


def test_a_recorded_duel_keeps_its_decision_and_is_worded_by_todays_rule():
    """A duel recorded under the earlier rule (a tie promoted; no p_value field) loads with its
    decision."""
    old = duel.DuelRecord(3, "self-g02", "self-g03", "a", 4, 0, [V, P, P, D], [V, V, V, P],
                          0.5, 0.29, True, "valid-and-novel rate higher (+0.50 ± 0.29)").to_json()
    del old["p_value"]
    again = duel.DuelRecord.from_json(old)
    assert again.promoted and again.p_value is None and "within noise (+0.50" in again.reason
    tie = {**old, "current_outcomes": [V] * 4, "challenger_outcomes": [V] * 4,
           "difference": 0.0, "stderr": 0.0, "reason": "valid-and-novel rate tie (+0.00 ± 0.00)"}
    assert duel.DuelRecord.from_json(tie).promoted  # as recorded, though today's rule says no
    assert not duel.decide(tie["current_outcomes"], tie["challenger_outcomes"]).promoted


def test_a_replayed_run_reaches_the_same_duel_decisions(tmp_path):
    recorded = tmp_path / "recorded"
    live = ByModel(WINNER["base"], WINNER["adapter"], recorder=Recorder(recorded / "llm"))
    make_loop(recorded, live, PromptCurveEvaluator(), generations=3, duel_samples=5).run()
    replayed = tmp_path / "replayed"
    client = ReplayClient(recorded, recorder=Recorder(replayed / "llm"))
    make_loop(replayed, client, RecordedEvaluator(recorded), generations=3,
              duel_samples=5).run()

    def decisions(run):
        archive = Archive(run)
        duels = {g: {k: v for k, v in d.items()} for g, d in archive.duels().items()}
        rows = [(r.id, r.name, r.status, r.stage, r.fitness, r.proposer) for r in archive.rows()]
        return duels, rows

    assert decisions(replayed) == decisions(recorded)
    assert decisions(recorded)[0][1]["promoted"]  # a duel was fought and won


def test_a_resumed_run_applies_a_recorded_duel_without_asking_again(tmp_path):
    run = tmp_path / "run"
    loop = make_loop(run, ByModel(WINNER["base"], WINNER["adapter"]), PromptCurveEvaluator(),
                     generations=1, duel_samples=5)
    loop.run()
    archive = Archive(run)
    assert archive.duels()[1]["promoted"]
    winner = archive.duels()[1]["challenger"]
    archive.set_meta("proposer", None)  # as if killed between the duel and the promotion
    archive.set_generation(1, "evaluating")
    proposer = ByModel([], [])
    resumed = make_loop(run, proposer, PromptCurveEvaluator(), generations=1, duel_samples=5)
    resumed.run()
    assert proposer.requests == []
    assert resumed.state.proposer_id == winner
    assert Archive(run).get_meta("proposer")["id"] == winner

"""The proposer duel: its rule, a worse challenger kept out, replay and resume reach the same
decision (scripted proposers that answer by served model; no model server)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from loop_helpers import CurveEvaluator, answer, make_loop

from selfdisco.discovery.evaluation import RecordedEvaluator
from selfdisco.discovery.proposer import duel
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import BaseClient
from selfdisco.llm.protocol import Completion
from selfdisco.llm.replay import ReplayClient
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events

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


def test_the_rule_keeps_a_worse_challenger_out_and_lets_a_tie_in():
    promoted, difference, stderr, reason = duel.decide([V, V, V, V], [P, P, D, P])
    assert not promoted and difference == -1.0 and stderr == 0.0
    assert "lower by 1.00" in reason
    assert duel.decide([V, P, V, P], [P, V, P, V])[0]  # a tie promotes
    # one answer worse of eight: -0.125 with s.e. 0.125, within 2 s.e.
    assert duel.decide([V] * 8, [V] * 7 + [P])[0]
    # five worse of eight: -0.625, s.e. 0.18: out
    assert not duel.decide([V] * 8, [V] * 3 + [P] * 5)[0]
    # a fitness clearly below the current proposer's keeps it out even on a tie
    # (the two policies' rows, blocked by seed: the untrained base against a policy on the
    # same prompts)
    base = SimpleNamespace(id="base", fitness=0.5, stderr=0.01, code=None,
                           metrics={"per_prompt": [0.45, 0.5, 0.55, 0.5]})
    policy = SimpleNamespace(id="g01-c1", fitness=0.3, stderr=0.01, code="code",
                             metrics={"per_prompt": [0.25, 0.3, 0.36, 0.29]})
    fitness = duel.fitness_check(base, policy, [base, policy])
    assert fitness["difference"] == pytest.approx(-0.2) and fitness["seeds"] == 1
    promoted, _, _, reason = duel.decide([V, V], [V, V], fitness)
    assert not promoted and reason.startswith("fitness lower")
    assert duel.fitness_check(None, policy, [policy]) is None
    # promoted either way, but "higher" only beyond 2 s.e.: 3/4 against 1/4 is +0.50 +- 0.29
    assert "rate within noise (+0.50" in duel.decide([V, P, P, D], [V, V, V, P])[3]
    assert "rate higher (+1.00" in duel.decide([P, P, P, P], [V, V, V, V])[3]


def test_a_recorded_duel_is_worded_by_todays_rule():
    old = duel.DuelRecord(3, "self-g02", "self-g03", "a", 4, 0, [V, P, P, D], [V, V, V, P],
                          0.5, 0.29, True, "valid-and-novel rate higher (+0.50 ± 0.29)")
    again = duel.DuelRecord.from_json(old.to_json())
    assert again.promoted and "within noise (+0.50" in again.reason


def test_a_worse_challenger_is_not_promoted(tmp_path):
    run = tmp_path / "run"
    # the policy of generation 1 beats the base on fitness, but as a proposer it writes
    # nothing usable: the duel keeps the base
    proposer = ByModel(GOOD, ["no json here"] * 20)
    loop = make_loop(run, proposer, CurveEvaluator(), duel_samples=4)
    assert loop.run() == "generation limit reached"
    archive = Archive(run)
    record = duel.DuelRecord.from_json(archive.duels()[1])
    assert record.current == "base" and record.challenger.startswith("g01-")
    assert record.challenger_outcomes == [P] * 4 and record.current_outcomes == [V] * 4
    assert not record.promoted
    assert record.fitness is not None and record.fitness["difference"] > 0
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


def test_a_challenger_as_good_is_promoted_and_proposes_next(tmp_path):
    run = tmp_path / "run"
    loop = make_loop(run, ByModel(GOOD[:6], GOOD[6:]), CurveEvaluator(), duel_samples=2)
    loop.run()
    archive = Archive(run)
    record = archive.duels()[1]
    assert record["promoted"], record["reason"]
    assert {r.proposer for r in archive.rows("generation = 2")} == {record["challenger"]}
    last = [d for d in archive.duels().values() if d["promoted"]][-1]
    assert archive.get_meta("proposer")["id"] == last["challenger"]


def test_a_replayed_run_reaches_the_same_duel_decisions(tmp_path):
    recorded = tmp_path / "recorded"
    live = ByModel(GOOD, ["no json", GOOD[9], "no json", "no json"] * 5,
                   recorder=Recorder(recorded / "llm"))
    make_loop(recorded, live, CurveEvaluator(), generations=3, duel_samples=3).run()
    replayed = tmp_path / "replayed"
    client = ReplayClient(recorded, recorder=Recorder(replayed / "llm"))
    make_loop(replayed, client, RecordedEvaluator(recorded), generations=3,
              duel_samples=3).run()

    def decisions(run):
        archive = Archive(run)
        duels = {g: {k: v for k, v in d.items()} for g, d in archive.duels().items()}
        rows = [(r.id, r.name, r.status, r.stage, r.fitness, r.proposer) for r in archive.rows()]
        return duels, rows

    assert decisions(replayed) == decisions(recorded)
    assert decisions(recorded)[0]  # at least one duel was fought


def test_a_resumed_run_applies_a_recorded_duel_without_asking_again(tmp_path):
    run = tmp_path / "run"
    loop = make_loop(run, ByModel(GOOD[:6], GOOD[6:]), CurveEvaluator(), generations=1,
                     duel_samples=2)
    loop.run()
    archive = Archive(run)
    winner = archive.duels()[1]["challenger"]
    archive.set_meta("proposer", None)  # as if killed between the duel and the promotion
    archive.set_generation(1, "evaluating")
    proposer = ByModel([], [])
    resumed = make_loop(run, proposer, CurveEvaluator(), generations=1, duel_samples=2)
    resumed.run()
    assert proposer.requests == []
    assert resumed.state.proposer_id == winner
    assert Archive(run).get_meta("proposer")["id"] == winner

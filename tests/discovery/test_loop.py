"""The discovery loop with a scripted proposer and a cheap, real evaluator (no model server)."""

from __future__ import annotations

import json

from loop_helpers import (
    DUEL_WINS,
    CurveEvaluator,
    PromptCurveEvaluator,
    ScriptedProposer,
    answer,
    make_loop,
)

from selfdisco.discovery.evaluation import RecordedEvaluator
from selfdisco.llm.cache import Recorder
from selfdisco.llm.replay import ReplayClient
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events

HOSTILE = [
    "",
    "I think we should use a loss that is like DPO but better.",
    '{"thought": "broken", "name": "x", "code": "def f(',
    "{" * 5000,
    "x" * 200_000,
    answer("escape", "().__class__.__bases__[0].__subclasses__()"),
    json.dumps({"thought": "t", "name": "imports",
                "code": "import os\ndef loss_fn(a, b, c, d, beta):\n"
                        "    os.system('touch /tmp/pwned')\n    return a"}),
    answer("nan_loss", "x * float('nan')"),
]


def test_generations_record_every_candidate_and_decision(tmp_path):
    run = tmp_path / "run"
    answers = [answer("cell_like", "0.5 * F.softplus(-1.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
               answer("dpo_again", "1.0 * F.softplus(-1.0 * x)"),  # duplicate of burn-in dpo
               answer("steeper", "1.0 * F.softplus(-3.0 * x)"),
               # the duel after generation 1: the base writes nothing usable, the best policy
               # five new losses (it wins, p = 1/32)
               *["no json"] * 5, *DUEL_WINS,
               answer("hinge_exp", "0.7 * torch.relu(1 - 2.0 * x) + 0.3 * torch.exp(-1.0 * x)"),
               answer("sig", "1.0 * torch.sigmoid(-2.0 * x)")]
    proposer = ScriptedProposer(answers, recorder=Recorder(run / "llm"))
    loop = make_loop(run, proposer, PromptCurveEvaluator(), duel_samples=5)
    reason = loop.run()
    assert reason == "generation limit reached"
    archive = Archive(run)
    rows = {r.id: r for r in archive.rows()}
    assert {"base", "burn-dpo", "burn-hinge"} <= set(rows)
    assert all(rows[i].status == "scored" for i in ("base", "burn-dpo", "burn-hinge"))
    # g1: slot 1 valid, slot 2 a duplicate of dpo, resampled once.
    assert rows["g01-c1"].status == "scored" and rows["g01-c1"].name == "cell_like"
    assert rows["g01-c2"].status == "rejected" and rows["g01-c2"].stage == "duplicate"
    assert "burn-dpo" in rows["g01-c2"].reason
    assert rows["g01-c2-r1"].status == "scored" and rows["g01-c2-r1"].name == "steeper"
    assert [g["state"] for g in archive.generations()] == ["done", "done"]
    # The proposer saw the duplicate's reason in its resample request.
    resample = proposer.requests[1]["messages"]
    assert "Code not valid" in resample[-1]["content"] and "burn-dpo" in resample[-1]["content"]
    # Self-improvement: the best of generation 1 beat the base, so it proposed generation 2.
    assert rows["g02-c1"].proposer in ("g01-c1", "g01-c2-r1")
    assert proposer.requests[-1]["model"] == f"proposer-{rows['g02-c1'].proposer}"
    events = list(read_events(run / "events.jsonl"))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types.count("generation_finished") == 2 and types[-1] == "run_finished"
    assert "proposer_changed" in types
    scored = {e["id"] for e in events if e["type"] == "candidate_scored"}
    assert scored == {r.id for r in rows.values() if r.status == "scored"}


def test_malformed_and_hostile_answers_never_stop_the_run(tmp_path):
    run = tmp_path / "run"
    proposer = ScriptedProposer(HOSTILE * 3)
    loop = make_loop(run, proposer, CurveEvaluator(), max_resamples=3)
    assert loop.run() == "generation limit reached"
    rows = Archive(run).rows("kind = 'proposal'")
    assert len(rows) == 2 * 2 * 4  # 2 generations x 2 slots x (1 + 3 resamples)
    assert all(r.status == "rejected" and r.reason for r in rows)
    stages = {r.stage for r in rows}
    assert stages == {"parse", "screen"}
    assert len(max((r.raw_text for r in rows), key=len)) <= 20000


def test_replay_reproduces_candidates_and_decisions_without_a_model(tmp_path):
    recorded = tmp_path / "recorded"
    answers = [answer("a", "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
               "not json at all",
               answer("b", "1.0 * torch.relu(1 - 2.0 * x)"),
               answer("c", "1.0 * torch.sigmoid(-1.5 * x)"),
               answer("d", "0.3 * torch.exp(-2.0 * x) + 0.7 * F.softplus(-1.0 * x)")]
    live = make_loop(recorded, ScriptedProposer(answers, recorder=Recorder(recorded / "llm")),
                     CurveEvaluator())
    live.run()
    replayed = tmp_path / "replayed"
    replay_client = ReplayClient(recorded, recorder=Recorder(replayed / "llm"))
    make_loop(replayed, replay_client, RecordedEvaluator(recorded)).run()

    def decisions(run):
        return [(r.id, r.name, r.code, r.status, r.stage, r.reason, r.fitness, r.proposer)
                for r in Archive(run).rows()]

    assert decisions(replayed) == decisions(recorded)
    assert len(decisions(recorded)) >= 7


def test_resume_requeues_what_was_in_flight(tmp_path):
    run = tmp_path / "run"
    answers = [answer("a", "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
               answer("b", "1.0 * torch.relu(1 - 2.0 * x)")]
    loop = make_loop(run, ScriptedProposer(answers), CurveEvaluator(), generations=1)
    loop.burn_in()
    archive = loop.archive
    archive.set_generation(1, "proposing")
    loop._propose(1)
    archive.set_generation(1, "evaluating")
    archive.update("g01-c1", status="training")  # as if killed mid-training
    before = {r.id: r for r in archive.rows()}
    assert archive.requeue_unfinished() == ["g01-c1"]
    evaluator = CurveEvaluator()
    resumed = make_loop(run, ScriptedProposer([]), evaluator, generations=1)
    assert resumed.run() == "generation limit reached"
    after = {r.id: r for r in Archive(run).rows()}
    assert set(before) <= set(after)
    assert evaluator.evaluated == ["g01-c1", "g01-c2"]  # nothing scored before is redone
    assert after["g01-c1"].status == "scored" and after["g01-c2"].status == "scored"
    assert after["burn-dpo"].fitness == before["burn-dpo"].fitness


def test_a_proposer_outage_stops_the_run_and_resume_finishes_it(tmp_path):
    import pytest

    from selfdisco.discovery.loop import ProposerUnavailable

    run = tmp_path / "run"
    good = [answer("a", "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
            answer("b", "1.0 * torch.relu(1 - 2.0 * x)")]
    with pytest.raises(ProposerUnavailable, match="selfdisco resume"):
        make_loop(run, ScriptedProposer(good, down_after=1), CurveEvaluator()).run()
    rows = {r.id: r for r in Archive(run).rows()}
    assert rows["g01-c1"].status == "scored" and "g02-c1" not in rows
    assert not any(r.reason and "empty" in r.reason for r in rows.values())
    later = [answer("c", "1.0 * torch.sigmoid(-1.5 * x)"),
             answer("d", "0.3 * torch.exp(-2.0 * x) + 0.7 * F.softplus(-1.0 * x)")]
    assert make_loop(run, ScriptedProposer(later), CurveEvaluator()).run() == (
        "generation limit reached")
    done = {r.id: r for r in Archive(run).rows()}
    assert done["g01-c1"].fitness == rows["g01-c1"].fitness
    assert {"g02-c1", "g02-c2"} <= set(done)


def test_a_proposer_that_refuses_every_request_ends_the_run_after_two_generations(tmp_path):
    class Refusing(ScriptedProposer):
        def _answer(self, request):
            self.requests.append(request)
            raise ValueError("could not convert string to float: '0.9481.'")

    run = tmp_path / "run"
    proposer = Refusing([])
    reason = make_loop(run, proposer, CurveEvaluator(), generations=50).run()
    assert reason.startswith("every proposer request failed for 2 generations")
    assert "0.9481." in reason and "resume" in reason
    generations = {r.generation for r in Archive(run).rows("kind = 'proposal'")}
    assert generations == {1, 2}
    # one request a generation succeeding is enough to keep going
    flaky = ScriptedProposer([answer("a", "1.0 * torch.relu(1 - 2.0 * x)")] * 40)
    calls = []

    def sometimes(request, _answer=flaky._answer):
        calls.append(1)
        if len(calls) % 3 == 0:
            raise ValueError("refused")
        return _answer(request)

    flaky._answer = sometimes
    assert make_loop(tmp_path / "flaky", flaky, CurveEvaluator(), generations=3).run() == (
        "generation limit reached")


def test_a_name_is_kept_only_by_a_loss_that_behaves_like_its_owner(tmp_path):
    run = tmp_path / "run"
    answers = [answer("dpo", "(x - 1) ** 2"),  # not dpo: shown under another name
               answer("dpo", "1.1 * F.softplus(-x)"),  # dpo up to a factor: a duplicate
               answer("ridge", "torch.relu(-x) ** 2"),
               answer("ridge", "F.softplus(-x) ** 2"),  # a different loss, the same name
               answer("ipo", "(x - 0.5) ** 2")]  # the catalog's ipo up to a factor
    loop = make_loop(run, ScriptedProposer(answers), CurveEvaluator(), generations=1,
                     candidates_per_generation=4)
    assert loop.run() == "generation limit reached"
    rows = {r.id: r for r in Archive(run).rows()}
    renamed = rows["g01-c1"]
    assert (renamed.name, renamed.proposed_name, renamed.status) == (
        "dpo_variant", "dpo", "scored")
    assert "does not behave like the catalog's dpo" in renamed.rename_reason
    assert rows["g01-c2"].stage == "duplicate" and rows["g01-c2"].name == "dpo"
    assert "burn-dpo" in rows["g01-c2"].reason
    assert (rows["g01-c3"].name, rows["g01-c4"].name) == ("ridge", "ridge-2")
    assert rows["g01-c4"].proposed_name == "ridge"
    assert "the name of g01-c3" in rows["g01-c4"].rename_reason
    kept = rows["g01-c2-r1"]  # ipo is not a burn-in loss here: compared with the catalog's
    assert (kept.name, kept.proposed_name, kept.rename_reason) == ("ipo", None, None)
    shown = {r.name for r in rows.values() if r.status == "scored"}
    assert len(shown) == len([r for r in rows.values() if r.status == "scored"])
    events = list(read_events(run / "events.jsonl"))
    proposed = {e["id"]: e["name"] for e in events if e["type"] == "candidate_proposed"}
    assert proposed["g01-c1"] == "dpo_variant" and proposed["g01-c4"] == "ridge-2"
    assert any(e["type"] == "log" and e["message"].startswith("g01-c1 renamed")
               for e in events)


def test_a_suffix_never_lands_on_a_taken_name():
    from selfdisco.losses.names import free_name, key

    taken = {key(n): "g01-c1" for n in ("dpo_variant", "DPO-variant-2", "ridge")}
    assert free_name("dpo_variant", taken) == "dpo_variant-3"
    assert free_name("ridge", taken) == "ridge-2" and free_name("lasso", taken) == "lasso"


def test_resume_recomputes_fingerprints_of_an_older_version(tmp_path):
    from selfdisco.losses.fingerprint import VERSION

    run = tmp_path / "run"
    answers = [answer("a", "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
               answer("b", "1.0 * torch.relu(1 - 2.0 * x)")]
    make_loop(run, ScriptedProposer(answers), CurveEvaluator(), generations=1).run()
    archive = Archive(run)
    for id in ("burn-dpo", "g01-c1"):
        archive.update(id, fingerprint={"version": VERSION - 1, "blocks": {"old": [1.0]}})
    archive.close()
    later = [answer("a_again", "0.5 * F.softplus(-2.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
             answer("dpo", "2 * F.softplus(-x)")]
    make_loop(run, ScriptedProposer(later), CurveEvaluator(), generations=2).run()
    rows = {r.id: r for r in Archive(run).rows()}
    assert rows["burn-dpo"].fingerprint["version"] == VERSION
    assert rows["g01-c1"].fingerprint["version"] == VERSION
    assert rows["g02-c1"].stage == "duplicate" and "g01-c1" in rows["g02-c1"].reason
    assert rows["g02-c2"].stage == "duplicate" and "burn-dpo" in rows["g02-c2"].reason

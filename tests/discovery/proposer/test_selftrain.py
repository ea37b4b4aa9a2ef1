"""Proposer self-training: pairs from a hand-made archive with known outcomes, the loss it trains
under, a real proposer adapter on the smoke model, and the proposals mode in the loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from loop_helpers import CurveEvaluator, make_loop
from test_duel import GOOD, ByModel

from selfdisco.config import load_config
from selfdisco.discovery.proposer import selftrain
from selfdisco.losses.catalog import catalog_entry
from selfdisco.rundir.archive import Archive

CONTEXT = [{"role": "system", "content": "write a loss"}, {"role": "user", "content": "next"}]


def hand_made(run_dir):
    """Generation 1's first answers with known outcomes, a resample, and one duel."""
    archive = Archive(run_dir)
    add = archive.add
    add("g01-c1", 1, "proposal", "scored", slot=0, attempt=0, raw_text="A", fitness=0.50,
        stderr=0.01, metrics={"vs_dpo": {"difference": 0.2, "stderr": 0.05}}, name="a",
        code="code of a")
    add("g01-c2", 1, "proposal", "rejected", slot=1, attempt=0, raw_text="B", stage="duplicate")
    add("g01-c3", 1, "proposal", "scored", slot=2, attempt=0, raw_text="C", fitness=0.20,
        stderr=0.01, name="c", code="code of c")
    add("g01-c4", 1, "proposal", "scored", slot=3, attempt=0, raw_text="D", fitness=0.49,
        stderr=0.01, name="d", code="code of d")  # within noise of A: no pair between them
    add("g01-c5", 1, "proposal", "failed", slot=4, attempt=0, raw_text="E", reason="oom")
    add("g01-c6", 1, "proposal", "rejected", slot=5, attempt=0, raw_text="F", stage="parse")
    add("g01-c6-r1", 1, "proposal", "rejected", slot=5, attempt=1, raw_text="G", stage="parse")
    add("g02-c1", 2, "proposal", "rejected", slot=0, attempt=0, raw_text="H", stage="parse")
    # slot 6 answered another island's context; generation 2 has no recorded context
    selftrain.save_context(run_dir, "g01", {**dict.fromkeys(range(6), CONTEXT), 6: CONTEXT[:1]})
    add("g01-c7", 1, "proposal", "rejected", slot=6, attempt=0, raw_text="I", stage="parse")
    duel = {"current_answers": ["P", "Q"], "current_outcomes": ["valid", "duplicate"],
            "challenger_answers": ["R", "S"], "challenger_outcomes": ["parse", "valid"]}
    selftrain.save_context(run_dir, "duel-g01", CONTEXT[:1])
    selftrain.save_practice(run_dir, 1, ["T", "U", "V"], ["valid", "screen", "valid"])
    selftrain.save_context(run_dir, "practice-g01", CONTEXT[1:])
    return archive, {1: duel}


def test_pairs_follow_the_recorded_outcomes(tmp_path):
    archive, duels = hand_made(tmp_path)
    pairs = selftrain.build_pairs(tmp_path, archive.rows(), duels)
    got = {(p.chosen.text, p.rejected.text) for p in pairs}
    assert got == {
        ("A", "B"), ("A", "C"), ("A", "E"), ("A", "F"),  # dup, scored lower, failed, unparsable
        ("C", "B"), ("C", "E"), ("C", "F"),
        ("D", "B"), ("D", "C"), ("D", "E"), ("D", "F"),
        ("P", "Q"), ("P", "R"), ("S", "Q"), ("S", "R"),  # the duel's answers
        ("T", "U"), ("V", "U"),  # the practice round's
    }
    assert len(pairs) == len(got)
    why = {(p.chosen.id, p.rejected.id): p.why for p in pairs}
    assert why["g01-c1", "g01-c3"].startswith("scored lower")
    assert why["g01-c1", "g01-c2"] == "rejected at duplicate"
    assert why["g01-c1", "g01-c5"] == "training failed"
    duel_prompts = [p.prompt for p in pairs if p.chosen.id.startswith("duel")]
    assert duel_prompts and all(p == CONTEXT[:1] for p in duel_prompts)
    row = pairs[0].to_json()
    assert row["prompt"] == CONTEXT and row["chosen"][0]["role"] == "assistant"


def add_scores(archive, id, kind, scores):
    """A scored row as the loop records it: per seed (rows of `scores`) its fitness and
    per-prompt scores, and their means."""
    scores = np.asarray(scores)
    replicates = [{"replicate": k, "fitness": float(s.mean()), "stderr": 0.01,
                   "per_prompt": [float(v) for v in s]} for k, s in enumerate(scores)]
    metrics = {"per_prompt": [float(v) for v in scores.mean(axis=0)]}
    if len(replicates) > 1:
        metrics["replicates"] = replicates
    generation = 0 if kind == "burn_in" else 1
    archive.add(id, generation, kind, "scored", fitness=float(scores.mean()), stderr=0.01,
                metrics=metrics, name=id, code=f"code of {id}")


def test_the_proposer_trains_under_a_loss_better_than_dpo_after_correction_else_dpo(tmp_path):
    # A recorded one-seed difference of 4 standard errors, with no training noise measured,
    # is no claim (issue 27, item 5: this chose g01-c1 before).
    archive, _ = hand_made(tmp_path)
    loss = selftrain.best_loss(archive.rows(), catalog_entry)
    assert loss["name"] == "dpo" and loss["code"] == catalog_entry("dpo")["code"]
    assert "family-wise" in loss["why"]
    # Baselines on 3 shared seeds measure the training noise; "strong" beats dpo clearly on
    # its one seed, "weak" only by the noise.
    rng = np.random.default_rng(0)
    prompts = rng.normal(0.5, 0.2, 16)
    seeds = rng.normal(0.0, 0.05, (3, 1))
    for name in ("dpo", "hinge", "ipo"):
        add_scores(archive, f"burn-{name}", "burn_in",
                   prompts + seeds + rng.normal(0.0, 0.01, (3, 16)))
    add_scores(archive, "strong", "proposal", prompts + seeds[:1] + 0.1)
    add_scores(archive, "weak", "proposal", prompts + seeds[:1] + 0.005)
    loss = selftrain.best_loss(archive.rows(), catalog_entry)
    assert (loss["name"], loss["id"]) == ("strong", "strong")
    assert "Holm over" in loss["why"]


def test_a_proposer_adapter_trains_on_the_smoke_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(load_config("smoke").to_toml())
    archive, duels = hand_made(run)
    pairs = selftrain.build_pairs(run, archive.rows(), duels)
    path = selftrain.proposer_dir(run) / "g01" / "pairs.jsonl"
    selftrain.write_pairs(path, pairs)
    trainer = selftrain.ProposerTrainer(run, timeout_s=600)
    loss = {"name": "dpo", "code": catalog_entry("dpo")["code"]}
    trained = trainer.train("g01", path, loss, seed=7, steps=2)
    assert trained.ok, trained.reason
    assert (selftrain.proposer_dir(run) / "g01" / "adapter" / "adapter_config.json").is_file()
    job = json.loads((path.parent / "job.json").read_text())
    assert job["seed"] == 7 and job["loss"]["name"] == "dpo"
    # a resumed run reuses the result; a replayed run reads the recorded one
    assert trainer.train("g01", path, loss, seed=7, steps=2) == trained
    assert selftrain.RecordedTrainer(run).train("g01", path, loss, 7, 2) == trained
    assert not selftrain.RecordedTrainer(run).train("g02", path, loss, 7, 2).ok


class FakeTrainer:
    """Writes an adapter directory without training (the loop's wiring is under test)."""

    def __init__(self):
        self.calls = []

    def train(self, name, pairs_path, loss, seed, steps):
        self.calls.append((name, pairs_path, loss["name"], seed, steps))
        return selftrain.Trained(True, str(pairs_path.parent / "adapter"), "2 steps")


def test_proposals_mode_trains_a_challenger_on_the_runs_answers(tmp_path):
    run = tmp_path / "run"
    # the base model: generation 1 (a resample after "no json"), 5 practice answers, then
    # nothing usable in the duel, where the adapter writes 5 valid losses and wins (p = 1/32)
    base = GOOD[:1] + ["no json"] + GOOD[1:2] + GOOD[2:7]
    loop = make_loop(run, ByModel(base, GOOD[7:]), CurveEvaluator(), self_improve="proposals",
                     duel_samples=5, proposer_min_pairs=1)
    trainer = FakeTrainer()
    loop.services.proposer_trainer = trainer
    loop.run()
    assert trainer.calls and trainer.calls[0][0] == "g01"
    # the curve fitness has one seed and no per-prompt scores, so no loss is better than dpo
    # after the correction (the archive test above shows one that is): it trains under dpo
    assert trainer.calls[0][2] == "dpo"
    pairs = (selftrain.proposer_dir(run) / "g01" / "pairs.jsonl").read_text().splitlines()
    assert pairs and json.loads(pairs[0])["rejected"][0]["content"] == "no json"
    practice = json.loads((selftrain.proposer_dir(run) / "g01" / "practice.json").read_text())
    assert len(practice["answers"]) == 5 and practice["outcomes"] == ["valid"] * 5
    record = Archive(run).duels()[1]
    assert record["challenger"] == "self-g01" and record["fitness"] is None  # no policy
    assert record["promoted"], record["reason"]
    assert {r.proposer for r in Archive(run).rows("generation = 2")} == {"self-g01"}


@pytest.mark.integration
def test_a_smoke_run_trains_a_proposer_and_its_replay_decides_alike(vllm_smoke, tmp_path):
    """One generation in the proposals mode on the smoke model against a live server: practice,
    pairs, a proposer adapter, a duel; then a replay reaches the same duel decision."""
    import subprocess
    import sys

    def selfdisco(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "selfdisco", *args], capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)

    run = tmp_path / "run"
    result = selfdisco("run", "--preset", "smoke", "--no-tui", "--run-dir", str(run),
                       "--generations", "1", "--set", f"server.url={vllm_smoke.base_url}",
                       "--set", "discovery.self_improve=proposals",
                       "--set", "discovery.proposer_min_pairs=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = selftrain.proposer_dir(run) / "g01"
    assert (out / "practice.json").is_file()
    duels = Archive(run).duels()
    if (out / "pairs.jsonl").is_file():  # the smoke model's answers gave pairs
        assert (out / "adapter" / "adapter_config.json").is_file(), result.stdout[-2000:]
        assert duels[1]["challenger"] == "self-g01"
    replay = tmp_path / "replay"
    result = selfdisco("run", "--no-tui", "--proposer", f"replay:{run}", "--run-dir",
                       str(replay))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert Archive(replay).duels() == duels

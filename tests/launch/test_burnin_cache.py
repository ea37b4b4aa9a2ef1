"""The burn-in cache: its key covers the whole recipe, and reused baselines say so everywhere."""

from __future__ import annotations

import pytest
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop

from selfdisco.config import load_config
from selfdisco.execution.records import Result
from selfdisco.launch.start import BurnInCache, burn_in_key, pairs_digest
from selfdisco.losses.catalog import catalog_entry
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events
from selfdisco.tui.state import RunState

PAIRS = [{"prompt": "The film", "chosen": " was great", "rejected": " was bad"}]


def key_of(config=None, **changes) -> dict:
    inputs = dict(model="sha-of-weights", dtype="float32", train={"beta": 0.1, "max_steps": 4},
                  seeds=[11, 12], pairs_version=1, pairs_sha=pairs_digest(PAIRS))
    inputs.update(changes)
    return burn_in_key(config or load_config("smoke"), **inputs)


def cache_path(tmp_path, key: dict):
    return BurnInCache(tmp_path, key).path


@pytest.mark.parametrize("changes", [
    {"model": "other-weights"}, {"dtype": "bfloat16"}, {"train": {"beta": 0.2, "max_steps": 4}},
    {"train": {"beta": 0.1, "max_steps": 5}}, {"seeds": [11, 13]}, {"pairs_version": 2},
    {"pairs_sha": pairs_digest([{**PAIRS[0], "chosen": " was fine"}])},
])
def test_the_key_changes_with_every_input(tmp_path, changes):
    assert cache_path(tmp_path, key_of(**changes)) != cache_path(tmp_path, key_of())
    assert cache_path(tmp_path, key_of()) == cache_path(tmp_path, key_of())


@pytest.mark.parametrize("overrides", [
    {"task": {"options": {"margin": 0.5}}}, {"preset": "cpu"}, {"task": {"name": "mtbench"}},
])
def test_the_key_changes_with_the_config(tmp_path, overrides):
    changed = load_config("smoke", overrides=overrides)
    assert cache_path(tmp_path, key_of(changed)) != cache_path(tmp_path, key_of())


def test_a_judged_task_keys_its_judge(tmp_path):
    one = load_config("smoke", overrides={"task": {"name": "mtbench"},
                                          "models": {"judge": "judge-a"}})
    two = load_config("smoke", overrides={"task": {"name": "mtbench"},
                                          "models": {"judge": "judge-b"}})
    assert cache_path(tmp_path, key_of(one)) != cache_path(tmp_path, key_of(two))


def test_pairs_digest_reads_a_dataset_like_a_list():
    class Rows:  # what datasets.Dataset offers
        def to_list(self):
            return list(PAIRS)

    assert pairs_digest(Rows()) == pairs_digest(PAIRS)


def test_an_entry_is_keyed_by_its_loss_code(tmp_path):
    cache = BurnInCache(tmp_path, key_of(), run_id="first")
    cache.put("burn-dpo", "def old(): ...", Result(status="scored", fitness=1.0, stderr=0.1,
                                                   metrics={"kl": 0.2}, adapter="/a"))
    assert cache.get("burn-dpo", "def new(): ...") is None
    got = cache.get("burn-dpo", "def old(): ...")
    assert got == Result(status="scored", fitness=1.0, stderr=0.1, metrics={"kl": 0.2},
                         cached_from="first")
    cache.put("base", None, Result(status="scored", fitness=0.5))
    assert cache.get("base", None).fitness == 0.5


def test_an_entry_of_an_older_shape_is_a_miss(tmp_path):
    import json

    cache = BurnInCache(tmp_path, key_of(), run_id="new")
    cache.path.parent.mkdir(parents=True)
    entry = cache._entry("burn-dpo", "def f(): ...")
    cache.path.write_text(json.dumps({entry: {"status": "scored", "fitness": 1.0, "run": "old"}}))
    assert cache.get("burn-dpo", "def f(): ...") is None


ANSWERS = [answer("cell_like", "0.5 * F.softplus(-1.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
           answer("steeper", "1.0 * F.softplus(-3.0 * x)"),
           answer("hinge_exp", "0.7 * torch.relu(1 - 2.0 * x) + 0.3 * torch.exp(-1.0 * x)"),
           answer("sig", "1.0 * torch.sigmoid(-2.0 * x)")]
BASELINES = {"base", "burn-dpo", "burn-hinge"}


def run_with_cache(run_dir, cache_dir, run_id: str) -> CurveEvaluator:
    evaluator = CurveEvaluator()
    loop = make_loop(run_dir, ScriptedProposer(list(ANSWERS)), evaluator, generations=1)
    loop.services.burn_in_cache = BurnInCache(cache_dir, key_of(), run_id=run_id)
    loop.run()
    return evaluator


def test_reused_baselines_are_marked_in_archive_events_tui_and_report(tmp_path):
    from selfdisco.report import write_report

    cache_dir = tmp_path / "cache"
    first = run_with_cache(tmp_path / "first", cache_dir, "first")
    assert BASELINES <= set(first.evaluated)
    assert not any(r.metrics.get("cached_from") for r in Archive(tmp_path / "first").rows())

    run = tmp_path / "second"
    second = run_with_cache(run, cache_dir, "second")
    assert not BASELINES & set(second.evaluated)
    rows = {r.id: r for r in Archive(run).rows()}
    for id in BASELINES:
        assert rows[id].status == "scored" and rows[id].metrics["cached_from"] == "first"
    assert rows["burn-dpo"].fitness == Archive(tmp_path / "first").get("burn-dpo").fitness
    assert not rows["g01-c1"].metrics.get("cached_from")

    events = list(read_events(run / "events.jsonl"))
    scored = {e["id"]: e for e in events if e["type"] == "candidate_scored"}
    assert scored["burn-dpo"]["metrics"]["cached_from"] == "first"
    for k in (0, 1):  # each of the baseline's two training seeds (the smoke preset's)
        assert any(e["type"] == "log" and f"burn-dpo (training seed {k}) reused from the "
                   "burn-in cache" in e["message"] for e in events)

    state = RunState.from_run_dir(run)
    assert state.candidates["burn-hinge"].status_text == "scored (cached)"
    assert state.candidates["burn-hinge"].cached_from == "first"
    assert state.candidates["g01-c1"].status_text == "scored"
    assert any("burn-dpo (training seed 1) reused" in line.text for line in state.log)

    report = write_report(run).read_text()
    assert "Baselines reused from an earlier run's burn-in cache" in report
    assert "burn-dpo (from run first)" in report and "| burn-hinge (cached) |" in report
    assert "g01-c1 (cached)" not in report


def test_a_changed_loss_code_is_evaluated_again(tmp_path):
    cache_dir = tmp_path / "cache"
    cache = BurnInCache(cache_dir, key_of(), run_id="old")
    code = catalog_entry("dpo")["code"]
    cache.put("burn-dpo", code + "\n# an older formula",
              Result(status="scored", fitness=9.0, stderr=0.0))
    evaluator = run_with_cache(tmp_path / "run", cache_dir, "run")
    assert "burn-dpo" in evaluator.evaluated
    row = Archive(tmp_path / "run").get("burn-dpo")
    assert row.fitness != 9.0 and not row.metrics.get("cached_from")


def test_the_detail_view_says_a_row_was_reused():
    from selfdisco.tui.rows import CandidateRow
    from selfdisco.tui.widgets import _outcome

    row = CandidateRow(id="burn-dpo", generation=0, name="dpo", order=0, status="scored",
                       fitness=0.5, stderr=0.1, metrics={"cached_from": "first"})
    assert "reused from the burn-in cache of run first" in _outcome(row).plain

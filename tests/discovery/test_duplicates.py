"""Duplicates as training sees them: the fingerprint compared on the rho the burn-in's training
reached (the run's reach), and the trajectory check (a candidate whose training on a seed ends
with a recorded row's per-prompt scores and rho statistics is that row's duplicate)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop

from selfdisco.discovery.search.fidelity import CHEAP
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events

# As issue 28's cpu-recipe trainings ended (beta 0.1), on training seeds 0 and 1: the widest
# pairings of the measured extremes (tests/losses/test_dedup.py)
MEASURED = [{"rho/mean": -3.9, "rho/std": 8.0, "rho/min": -14.5, "rho/max": 6.0},
            {"rho/mean": 4.2, "rho/std": 8.0, "rho/min": -5.0, "rho/max": 15.1}]
ONE_TRACE = [{"rho/mean": 0.5, "rho/std": 2.0, "rho/min": -2.0, "rho/max": 3.0}]
# hinge wherever training goes (rho >= -20), something else below (as "jmp_dex" was)
FAR_HINGE = answer("jmp_dex", "torch.relu(1 - x) + 0.5 * torch.relu(-20 - rho) ** 2")
# hinge where the fake training reads the curve (rho >= -8 at beta 1), twice its slope below:
# a fingerprint apart from hinge's inside every reach, a training like hinge's
HINGE_TWIN = answer("hinge_twin", "torch.where(rho < -8, 2 * torch.relu(1 - x), torch.relu(1 - x))")
# hinge shifted by one unit of rho: on training seed 0 it reads what hinge reads on seed 1
SHIFTED = answer("shifted", "torch.relu(-x)")
OTHER = answer("steeper", "1.0 * F.softplus(-3.0 * x)")


class TracedEvaluator(CurveEvaluator):
    """CurveEvaluator whose trainings leave a trace: per-prompt scores read off the loss's
    curve at beta 1, at rho = -4..4 shifted by the training seed k (seed k reads rho + k), and
    the last step's rho statistics, traces[k] (the first for every seed when there is one)."""

    def __init__(self, traces: list[dict]):
        super().__init__()
        self.traces = traces
        self.calls: list[tuple[str, int | None, float]] = []  # (id, seed, fidelity)

    def evaluate(self, rows, on_progress, on_done, on_start=None, replicates=None,
                 fidelity=1.0) -> None:
        for row in rows:
            for k in replicates.get(row.id, [0]) if replicates else [None]:
                self.calls.append((row.id, k, fidelity))
                result = self._traced(row, k or 0, self._evaluate(row, on_progress, on_start))
                on_done(row, result if k is None else replace(result, replicate=k))

    def _traced(self, row, k: int, result):
        import torch

        from selfdisco.losses import compile_loss

        if row.code is None or result.status != "scored":
            return result
        rho = torch.arange(-4.0, 5.0) + k
        zero = torch.zeros(len(rho))
        scores = compile_loss(row.code)(rho, zero, zero, zero, 1.0).tolist()
        trace = self.traces[k % len(self.traces)]
        return replace(result, metrics={**result.metrics, "per_prompt": scores,
                                        "train": dict(trace)})


def rows_of(run) -> dict:
    archive = Archive(run)
    rows = {r.id: r for r in archive.rows()}
    archive.close()
    return rows


def trained(evaluator: TracedEvaluator, id: str) -> list:
    return [(k, f) for i, k, f in evaluator.calls if i == id]


def test_the_run_records_the_reach_of_its_burn_in_and_judges_duplicates_there(tmp_path):
    run = tmp_path / "run"
    evaluator = TracedEvaluator(MEASURED)
    loop = make_loop(run, ScriptedProposer([FAR_HINGE, OTHER]), evaluator, generations=1,
                     max_resamples=0, self_improve="off")
    loop.services.beta = 0.1  # the cpu recipe's
    assert loop.run() == "generation limit reached"
    rows = rows_of(run)
    assert rows["g01-c1"].status == "rejected" and rows["g01-c1"].stage == "duplicate"
    assert "burn-hinge" in rows["g01-c1"].reason and not trained(evaluator, "g01-c1")
    assert rows["g01-c2"].status == "scored"
    reach = Archive(run).reach()  # dpo and hinge on 2 seeds each: 4 trainings
    assert (reach.low, reach.high, reach.beta, reach.trainings) == pytest.approx(
        (-19.9, 20.2, 0.1, 4))
    logs = [e["message"] for e in read_events(run / "events.jsonl") if e["type"] == "log"]
    assert any(m.startswith("duplicates are judged on rho in [-19.9, 20.2]") for m in logs)
    # resumed, the run reads the reach it recorded, whatever its trainings would say now
    make_loop(run, ScriptedProposer([]), TracedEvaluator(ONE_TRACE), generations=1).run()
    assert Archive(run).reach() == reach


def test_a_run_begun_before_the_reach_keeps_the_full_grid(tmp_path):
    from selfdisco.rundir.archive import RHO_REACH

    run = tmp_path / "run"
    evaluator = TracedEvaluator(MEASURED)
    loop = make_loop(run, ScriptedProposer([FAR_HINGE, OTHER]), evaluator, generations=1,
                     max_resamples=0, self_improve="off")
    loop.services.beta = 0.1
    loop.burn_in()
    loop.archive.db.execute("DELETE FROM meta WHERE key = ?", (RHO_REACH,))  # as before
    loop.archive.set_generation(1, "proposing")
    loop.run()
    assert Archive(run).reach() is None
    rows = rows_of(run)
    # admitted on the whole grid, trained once, then found to have trained like hinge
    assert trained(evaluator, "g01-c1") == [(None, 1.0)]
    assert rows["g01-c1"].stage == "duplicate" and "burn-hinge" in rows["g01-c1"].reason
    assert rows["g01-c1"].metrics["duplicate_of"] == "burn-hinge"


def test_a_candidate_that_trains_like_a_recorded_row_on_its_seed_is_its_duplicate(tmp_path):
    run = tmp_path / "run"
    evaluator = TracedEvaluator(ONE_TRACE)
    loop = make_loop(run, ScriptedProposer([HINGE_TWIN, SHIFTED]), evaluator, generations=1,
                     max_resamples=0, self_improve="off")
    assert loop.run() == "generation limit reached"
    archive = Archive(run)
    rows = {r.id: r for r in archive.rows()}
    twin, shifted = rows["g01-c1"], rows["g01-c2"]
    assert twin.status == "rejected" and twin.stage == "duplicate"
    assert "trained the same as hinge (burn-hinge)" in twin.reason
    assert twin.metrics["duplicate_of"] == "burn-hinge" and twin.fitness is None
    # what it measured is kept: its result on the seed, in its metrics and in the archive
    kept = archive.replicates("g01-c1")[0]
    assert twin.metrics["per_prompt"] == kept["metrics"]["per_prompt"] == (
        archive.replicates("burn-hinge")[0]["metrics"]["per_prompt"])
    assert twin.metrics["measured"]["fitness"] == kept["fitness"]
    # the same scores as hinge's on another training seed (1) are no duplicate
    assert shifted.metrics["per_prompt"] == (
        archive.replicates("burn-hinge")[1]["metrics"]["per_prompt"])
    assert shifted.status == "scored"
    archive.close()
    rejected = [e for e in read_events(run / "events.jsonl")
                if e["type"] == "candidate_rejected" and e["id"] == "g01-c1"]
    assert [e["stage"] for e in rejected] == ["duplicate"]
    # a copy of the duplicate is recognised by its fingerprint, before training
    again = TracedEvaluator(ONE_TRACE)
    make_loop(run, ScriptedProposer([HINGE_TWIN, OTHER]), again, generations=2,
              max_resamples=0, self_improve="off").run()
    copy = rows_of(run)["g02-c1"]
    assert copy.stage == "duplicate" and "g01-c1" in copy.reason and not trained(again, "g02-c1")


def test_a_duplicate_found_on_its_first_seed_trains_on_no_other(tmp_path):
    run = tmp_path / "run"
    evaluator = TracedEvaluator(ONE_TRACE)
    make_loop(run, ScriptedProposer([HINGE_TWIN, SHIFTED]), evaluator, generations=1,
              max_resamples=0, self_improve="off", replicates=2).run()
    rows = rows_of(run)
    assert rows["g01-c1"].stage == "duplicate" and "training seed 0" in rows["g01-c1"].reason
    assert trained(evaluator, "g01-c1") == [(0, 1.0)]
    assert trained(evaluator, "g01-c2") == [(0, 1.0), (1, 1.0)]
    assert rows["g01-c2"].status == "scored" and len(rows["g01-c2"].metrics["replicates"]) == 2


def test_a_duplicate_found_at_the_cheap_stage_is_not_trained_fully(tmp_path):
    run = tmp_path / "run"
    evaluator = TracedEvaluator(ONE_TRACE)
    make_loop(run, ScriptedProposer([HINGE_TWIN, SHIFTED]), evaluator, generations=1,
              max_resamples=0, self_improve="off", fidelity=0.5, fidelity_keep=1.0).run()
    rows = rows_of(run)
    assert trained(evaluator, "g01-c1") == [(None, 0.5)]
    assert trained(evaluator, "g01-c2") == [(None, 0.5), (None, 1.0)]
    assert rows["g01-c1"].stage == "duplicate" and "burn-hinge" in rows["g01-c1"].reason
    assert "cheap stage" in rows["g01-c1"].reason
    archive = Archive(run)
    assert archive.stage("g01-c1", CHEAP)["decision"] == "duplicate"
    archive.close()


def test_the_same_training_is_equal_scores_and_rho_within_float_noise():
    from selfdisco.discovery.evaluation import same_training_as
    from selfdisco.execution.records import Result

    train = dict(ONE_TRACE[0])
    mine = Result(status="scored", fitness=0.5, metrics={"per_prompt": [0.25, 0.75],
                                                         "train": train})

    def recorded(scores, rho=train, **fields):
        return Result(status="scored", fitness=0.5, metrics={"per_prompt": scores, "train": rho},
                      **fields).to_dict()

    noise, apart = recorded([0.25, 0.75 * (1 + 1e-10)]), recorded([0.25, 0.75 * (1 + 1e-8)])
    assert same_training_as(mine, [("a", None), ("b", noise)]) == "b"
    assert same_training_as(mine, [("a", apart)]) is None
    other_rho = recorded([0.25, 0.75], {**train, "rho/std": 2.1})
    assert same_training_as(mine, [("a", other_rho)]) is None
    assert same_training_as(replace(mine, train_seed=1),
                            [("a", recorded([0.25, 0.75], train_seed=2))]) is None
    # right-or-wrong scores without a training trace (the digits task) never match
    right = Result(status="scored", fitness=0.5, metrics={"per_prompt": [1.0, 0.0]})
    assert same_training_as(right, [("a", right.to_dict())]) is None


def test_a_duplicate_at_the_cheap_stage_takes_no_place_in_the_cut(tmp_path):
    """With room for one of two, the one that is not a duplicate goes on, whatever the
    duplicate's cheap fitness."""
    run = tmp_path / "run"
    evaluator = TracedEvaluator(ONE_TRACE)
    make_loop(run, ScriptedProposer([HINGE_TWIN, SHIFTED]), evaluator, generations=1,
              max_resamples=0, self_improve="off", fidelity=0.5, fidelity_keep=0.5).run()
    rows = rows_of(run)
    assert rows["g01-c1"].stage == "duplicate"
    assert trained(evaluator, "g01-c2") == [(None, 0.5), (None, 1.0)]

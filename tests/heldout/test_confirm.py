"""The confirmatory step (selfdisco.heldout.confirm): the statement is recorded before the first
training, dpo's beta is chosen on the search's prompts with tuning seeds, and the verdict
follows the pre-registered seed-blocked test. Training and scoring are replaced at their seam
(HeldoutContext.evaluate) by constructed per-prompt scores."""

from __future__ import annotations

import json
import math
import random

import pytest

from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.execution.records import Result
from selfdisco.heldout import confirm
from selfdisco.heldout.measure import HeldoutRequest, run_heldout
from selfdisco.launch.start import prepare_run_dir
from selfdisco.losses import catalog
from selfdisco.report import write_report
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import check_event, read_events

PROMPTS = 12


class ScoredTrials:
    """Per-prompt scores made up from the loss, its beta and the seed: dpo is best at beta
    0.05; the winner is `effect` above dpo's best, with seed and prompt noise. Each call
    checks that the statement was recorded before it."""

    def __init__(self, run_dir, effect: float):
        self.run_dir = run_dir
        self.effect = effect
        self.calls: list[tuple[str, float, int, dict]] = []

    def evaluate(self, point, code, task_options=None) -> Result:
        archive = Archive(self.run_dir)
        stated = [r for r in archive.heldout_rows("confirm")
                  if r.metrics.get("role") == "statement"]
        archive.close()
        assert stated, "a point trained before the statement was recorded"
        self.calls.append((point.loss_id, point.beta, point.seed, dict(task_options)))
        if point.loss_id == "dpo":
            level = 0.40 - 0.03 * abs(math.log2(point.beta / 0.05))
        else:
            level = 0.40 + self.effect
        seed_shift = random.Random(f"{point.loss_id}-{point.seed}").gauss(0, 0.005)
        scores = [level + seed_shift + 0.05 * (j % 3)
                  + random.Random(f"{point.loss_id}-{point.seed}-{j}").gauss(0, 0.02)
                  for j in range(PROMPTS)]
        return Result(status="scored", fitness=sum(scores) / PROMPTS, stderr=0.01,
                      metrics={"per_prompt": scores}, timings={"train": 1.0, "score": 2.0})

    def policy(self):
        raise AssertionError("confirm needs no policy client")


@pytest.fixture
def run_dir(tmp_path):
    """A finished cpu-preset run: its winner g01-c1 (ipo) and a lesser discovery."""
    run = prepare_run_dir(load_config("cpu"), tmp_path / "run")
    archive = Archive(run)
    for id, fitness, loss in (("g01-c1", 0.36, "ipo"), ("g01-c2", 0.30, "hinge")):
        archive.add(id, 1, "proposal", "scored", name=loss, fitness=fitness, stderr=0.02,
                    code=catalog.CATALOG[loss].candidate.code,
                    timings={"data": 0.0, "train": 30.0, "score": 60.0})
    archive.close()
    return run


def confirm_request(**more) -> HeldoutRequest:
    return HeldoutRequest(**{"protocols": ["confirm"], "betas": [0.1], **more})


def rows(run):
    archive = Archive(run)
    try:
        return archive.heldout_rows("confirm")
    finally:
        archive.close()


def verdict_of(run) -> dict:
    [verdict] = [r.metrics for r in rows(run) if r.metrics.get("role") == "verdict"]
    return verdict


def test_a_real_advantage_is_confirmed_and_the_statement_came_first(run_dir):
    trials = ScoredTrials(run_dir, effect=0.05)
    run_heldout(run_dir, confirm_request(), trials=trials, log=lambda text: None)
    # 4 seeds (the default): the winner 4, dpo at 4 betas x 4 tuning seeds, dpo 4
    assert len(trials.calls) == 24
    config = load_config("cpu")
    from selfdisco.heldout.session import fresh_seeds

    seeds = fresh_seeds(config, 8)
    tuning = [c for c in trials.calls if c[2] in seeds[4:]]
    assert {(c[0], c[1]) for c in tuning} == {("dpo", b) for b in (0.025, 0.05, 0.1, 0.2)}
    assert all(c[3]["prompt_set"] == "search" for c in tuning)
    confirmation = [c for c in trials.calls if c[2] in seeds[:4]]
    assert {(c[0], c[1]) for c in confirmation} == {("g01-c1", 0.1), ("dpo", 0.05)}
    assert all(c[3]["prompt_set"] == "unused" for c in confirmation)

    verdict = verdict_of(run_dir)
    assert verdict["verdict"] == "confirmed" and verdict["reference_beta"] == 0.05
    assert verdict["difference"] == pytest.approx(0.05, abs=0.01)
    assert verdict["p_value"] < 0.05 and verdict["n_seeds"] == 4
    assert verdict["n_prompts"] == PROMPTS
    assert verdict["text"].startswith("confirmed: g01-c1 minus dpo (beta 0.05) = +0.0")
    assert "(s.e.), df" in verdict["text"] and "4 seeds x 12 prompts" in verdict["text"]

    events = [e for e in read_events(run_dir / "events.jsonl")]
    for event in events:
        check_event(event)
    logs = [e["message"] for e in events if e["type"] == "log"]
    stated = next(i for i, e in enumerate(events) if e["type"] == "log"
                  and e["message"].startswith("confirm: pre-registered"))
    first_point = next(i for i, e in enumerate(events) if e["type"] == "heldout_point")
    assert stated < first_point
    assert any(m.startswith("confirm: confirmed: g01-c1") for m in logs)
    points = [e for e in events if e["type"] == "heldout_point"]
    assert (points[-1]["done"], points[-1]["total"]) == (24, 24)

    write_report(run_dir)
    section = (run_dir / "report.md").read_text().split("### Confirmation of the winner")[1]
    assert "- H1: the fitness of g01-c1 (ipo) minus the fitness of dpo at its best beta of " \
           "0.025, 0.05, 0.1, 0.2" in section
    assert "one-sided at level 0.05" in section and "before its first point" in section
    assert "**Verdict: confirmed: g01-c1 minus dpo (beta 0.05)" in section
    assert "| tuning | dpo | 0.05 | 4 |" in section


def test_no_advantage_is_not_confirmed(run_dir):
    run_heldout(run_dir, confirm_request(seeds=3), trials=ScoredTrials(run_dir, effect=-0.01),
                log=lambda text: None)
    verdict = verdict_of(run_dir)
    assert verdict["verdict"] == "not confirmed" and verdict["p_value"] >= 0.05
    assert verdict["text"].startswith("not confirmed: g01-c1 minus dpo (beta 0.05) = -0.0")
    assert "3 seeds x 12 prompts" in verdict["text"] and ">= 0.05" in verdict["text"]


def test_a_rerun_measures_nothing_and_a_changed_test_is_refused(run_dir):
    run_heldout(run_dir, confirm_request(), trials=ScoredTrials(run_dir, 0.05),
                log=lambda text: None)
    again = ScoredTrials(run_dir, 0.05)
    text = run_heldout(run_dir, confirm_request(), trials=again, log=lambda text: None).text
    assert again.calls == [] and "confirm: 0 of 24 points to measure" in text
    with pytest.raises(UserError, match=r"pre-registered with other settings \(seeds, "
                                        r"tuning_seeds differ"):
        run_heldout(run_dir, confirm_request(seeds=5), trials=again, log=lambda text: None)


def test_the_estimate_states_the_cost_and_bad_input_is_clear(run_dir, capsys):
    from selfdisco.cli import main

    assert main(["heldout", str(run_dir), "--protocols", "confirm", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "confirm: 24 of 24 points to measure" in out
    assert "scored on 32 held-out openings 33-64 of 157, which the search never scored" in out
    assert main(["heldout", str(run_dir), "--protocols", "confirm", "--seeds", "1",
                 "--estimate"]) == 2
    assert "needs 2 or more training seeds" in capsys.readouterr().err
    assert main(["heldout", str(run_dir), "--protocols", "confirm", "--losses", "dpo",
                 "--estimate"]) == 2
    assert "is dpo itself" in capsys.readouterr().err
    assert main(["heldout", str(run_dir), "--protocols", "confirm", "--option",
                 "dpo_betas=0.1,x", "--estimate"]) == 2
    assert "option dpo_betas='0.1,x'" in capsys.readouterr().err
    assert main(["heldout", str(run_dir), "--protocols", "confirm", "--prompt-count", "200",
                 "--estimate"]) == 2
    assert "too few unused openings" in capsys.readouterr().err


def test_a_failed_winner_is_not_confirmed(run_dir):
    class Diverging(ScoredTrials):
        def evaluate(self, point, code, task_options=None):
            if point.loss_id == "g01-c1" and len(self.calls) == 0:
                self.calls.append((point.loss_id, point.beta, point.seed, {}))
                return Result.failed("diverged", "diverged at step 3")
            return super().evaluate(point, code, task_options)

    run_heldout(run_dir, confirm_request(seeds=2), trials=Diverging(run_dir, 0.05),
                log=lambda text: None)
    verdict = verdict_of(run_dir)
    assert verdict["verdict"] == "not confirmed" and "diverged at step 3" in verdict["reason"]


def test_registered_with_its_hooks():
    from selfdisco.heldout import PROTOCOLS, protocol_hook

    assert PROTOCOLS.load("confirm") is confirm.run
    assert protocol_hook("confirm", "report_lines") is confirm.report_lines
    assert protocol_hook("confirm", "DEFAULT_SEEDS") == 4


def test_the_statement_round_trips(run_dir):
    run_heldout(run_dir, confirm_request(seeds=2), trials=ScoredTrials(run_dir, 0.05),
                log=lambda text: None)
    [row] = [r for r in rows(run_dir) if r.metrics.get("role") == "statement"]
    statement = confirm.Statement.from_dict(json.loads(json.dumps(row.metrics["statement"])))
    assert statement.to_dict() == row.metrics["statement"]
    assert statement.alpha == 0.05 and len(statement.seeds) == 2
    assert not set(statement.seeds) & set(statement.tuning_seeds)


def test_a_digits_winner_is_confirmed_on_the_test_split_in_the_sandbox(tmp_path):
    """The real classification path: each point trains and scores in a child of the confined
    sandbox; every confirmation point is scored on the 270 test images."""
    from selfdisco.tasks.digits import screening

    config = load_config("smoke", overrides={
        "task": {"name": "digits", "options": {"epochs": 4, "max_seconds": 600.0}},
        "discovery": {"burn_in": ["cross_entropy"], "code_grammar": "free",
                      "self_improve": "off"}})
    run = prepare_run_dir(config, tmp_path / "run")
    archive = Archive(run)
    archive.add("g01-c1", 1, "proposal", "scored", name="focal", fitness=0.95, stderr=0.01,
                code=screening.catalog_entry("focal")["code"],
                metrics={"split_version": 2, "eval_split": "validation"},
                timings={"train": 0.5})
    archive.close()
    run_heldout(run, confirm_request(seeds=2), log=lambda text: None)
    points = [r for r in rows(run) if r.seed != -1]
    assert {(r.loss_id, r.beta) for r in points} == {("g01-c1", 0.0), ("cross_entropy", 0.0)}
    assert all(r.status == "done" and len(r.metrics["per_prompt"]) == 270 for r in points)
    assert all(r.metrics["scored_with"] == {"split_version": 2, "eval_split": "test"}
               for r in points)
    verdict = verdict_of(run)
    assert verdict["verdict"] in ("confirmed", "not confirmed") and verdict["n_prompts"] == 270
    assert verdict["text"].startswith(f"{verdict['verdict']}: g01-c1 minus cross_entropy = ")


def test_one_dpo_beta_needs_no_tuning_and_dpo_failing_everywhere_gives_no_verdict(run_dir):
    one = ScoredTrials(run_dir, 0.05)
    run_heldout(run_dir, confirm_request(seeds=2, options={"dpo_betas": "0.05"}), trials=one,
                log=lambda text: None)
    assert sorted((c[0], c[1]) for c in one.calls) == [("dpo", 0.05)] * 2 + [("g01-c1", 0.1)] * 2
    assert verdict_of(run_dir)["verdict"] == "confirmed"

    class DpoDiverges(ScoredTrials):
        def evaluate(self, point, code, task_options=None):
            if point.loss_id == "dpo":
                return Result.failed("diverged", "diverged at step 1")
            return super().evaluate(point, code, task_options)

    other = prepare_run_dir(load_config("cpu"), run_dir.parent / "other")
    archive = Archive(other)
    archive.add("g01-c1", 1, "proposal", "scored", name="ipo", fitness=0.36,
                code=catalog.CATALOG["ipo"].candidate.code)
    archive.close()
    run_heldout(other, confirm_request(seeds=2), trials=DpoDiverges(other, 0.05),
                log=lambda text: None)
    verdict = verdict_of(other)
    assert verdict["verdict"] == "no verdict" and "failed at every beta" in verdict["reason"]

"""Multi-fidelity evaluation on the digits task: the cheap stage, the rule, and resume."""

from __future__ import annotations

import pytest
from loop_helpers import DIGITS_ANSWERS, ScriptedProposer, digits_config, make_digits_loop

from selfdisco.discovery.search.fidelity import CHEAP
from selfdisco.report import write_report
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events
from selfdisco.tui.state import RunState

FIDELITY = {"fidelity": 0.5, "fidelity_keep": 0.5, "candidates_per_generation": 4}


class Killed(Exception):
    pass


class Recording:
    """The real evaluator, recording (id, fidelity) of each evaluation; optionally killed
    (an exception out of the loop) after `kill_after` cheap results."""

    def __init__(self, inner, kill_after: int | None = None):
        self.inner, self.kill_after, self.calls = inner, kill_after, []

    def evaluate(self, rows, on_progress, on_done, on_start=None, replicates=None,
                 fidelity=1.0):
        def done(row, result):
            self.calls.append((row.id, fidelity))
            on_done(row, result)
            cheap = sum(f < 1 for _, f in self.calls)
            if fidelity < 1 and self.kill_after is not None and cheap >= self.kill_after:
                raise Killed

        self.inner.evaluate(rows, on_progress, done, on_start, replicates=replicates,
                            fidelity=fidelity)


def decisions(run) -> dict[str, str]:
    archive = Archive(run)
    out = {id: stages[CHEAP]["decision"] for id, stages in archive.stages().items()}
    archive.close()
    return out


def test_only_the_best_at_the_cheap_stage_are_trained_fully(tmp_path, digits_evaluator):
    run = tmp_path / "run"
    recording = Recording(digits_evaluator)
    proposer = ScriptedProposer(DIGITS_ANSWERS + DIGITS_ANSWERS)
    loop = make_digits_loop(run, proposer, recording, generations=2, **FIDELITY)
    loop.run()
    archive = Archive(run)
    rows = {r.id: r for r in archive.rows("kind = 'proposal'")}
    stages = archive.stages()
    stopped = [id for id, s in stages.items() if s[CHEAP]["decision"] == "stopped"]
    promoted = [id for id, s in stages.items() if s[CHEAP]["decision"] == "promoted"]
    assert len(promoted) == 2 and len(stopped) == 2  # the top half of generation 1's four
    full = {id for id, f in recording.calls if f == 1.0}
    assert not full & set(stopped) and set(promoted) <= full
    for id in stopped:
        assert rows[id].status == "failed" and rows[id].metrics["cause"] == "stopped"
        assert "not trained fully" in rows[id].reason and "rank" in rows[id].reason
    cheap = [stages[id][CHEAP]["result"]["fitness"] for id in promoted + stopped]
    assert min(cheap[:2]) >= max(cheap[2:])  # promoted by their cheap fitness
    # The baselines were measured at the same fidelity, once.
    baselines = [id for id, f in recording.calls if id.startswith("burn-") and f < 1]
    assert sorted(baselines) == ["burn-cross_entropy", "burn-focal"]
    assert {(e["id"], e["decision"]) for e in read_events(run / "events.jsonl")
            if e["type"] == "candidate_stage" and e["decision"]} == {
        (id, stages[id][CHEAP]["decision"]) for id in promoted + stopped}
    # The proposer is told a stopped candidate's figures, not that its training failed.
    history = [m["content"] for m in proposer.requests[-1]["messages"] if m["role"] == "user"]
    assert any(text.startswith("Stopped early: not trained fully") for text in history)
    assert not any(text.startswith("Training failed") for text in history)
    # The TUI's fold and the report show each stage's result and the rule.
    state = RunState.from_run_dir(run)
    assert state.candidates[stopped[0]].stages[CHEAP]["decision"] == "stopped"
    assert any("not trained fully" in line.text for line in state.log)
    report = write_report(run).read_text()
    assert "## Multi-fidelity stages" in report and f"| {stopped[0]} |" in report


def test_a_run_killed_in_the_cheap_stage_resumes_with_the_same_decisions(tmp_path,
                                                                       digits_evaluator):
    whole = tmp_path / "whole"
    make_digits_loop(whole, ScriptedProposer(DIGITS_ANSWERS), Recording(digits_evaluator),
                     **FIDELITY).run()
    run = tmp_path / "run"
    killed = Recording(digits_evaluator, kill_after=3)  # 2 baselines, then 1 of the 4 candidates
    with pytest.raises(Killed):
        make_digits_loop(run, ScriptedProposer(DIGITS_ANSWERS), killed, **FIDELITY).run()
    archive = Archive(run)
    assert len(archive.stages()) == 3
    archive.requeue_unfinished()
    archive.close()
    resumed = Recording(digits_evaluator)
    loop = make_digits_loop(run, ScriptedProposer([]), resumed, **FIDELITY)
    assert loop.run() == "generation limit reached"
    again = [id for id, f in resumed.calls if f < 1]
    assert len(again) == 3 and not set(again) & {id for id, _ in killed.calls}
    assert decisions(run) == decisions(whole)


def test_a_replay_of_a_multi_fidelity_digits_run_takes_the_same_decisions(tmp_path,
                                                                        digits_evaluator):
    from selfdisco.launch.start import prepare_run_dir, start_run
    from selfdisco.llm.cache import Recorder

    recorded = tmp_path / "recorded"
    proposer = ScriptedProposer(DIGITS_ANSWERS, recorder=Recorder(recorded / "llm"))
    make_digits_loop(recorded, proposer, digits_evaluator, **FIDELITY).run()
    config = digits_config(**FIDELITY)
    config.server.proposer_source = f"replay:{recorded}"
    replay = prepare_run_dir(config, tmp_path / "replay")
    assert start_run(replay, resume=False) == "generation limit reached"
    assert decisions(replay) == decisions(recorded) != {}
    rows = [{(r.id, r.status, r.fitness) for r in Archive(run).rows()}
            for run in (recorded, replay)]
    assert rows[0] == rows[1]


def test_a_cheap_stage_scores_a_task_on_the_first_share_of_its_prompts():
    from selfdisco.execution.worker import fewer_prompts
    from selfdisco.tasks import TaskContext, get_task

    sentiment = get_task("sentiment")
    ctx = TaskContext(preset="cpu", options={"eval_prompts": 32})
    fewer_prompts(sentiment, ctx, 0.25)
    assert sentiment.settings(ctx).eval_prompts == 8
    digits = TaskContext(options={})
    fewer_prompts(get_task("digits"), digits, 0.25)  # no prompts: scored as usual
    assert digits.options == {}


def test_only_promoted_candidates_get_their_replicates(tmp_path, digits_evaluator):
    run = tmp_path / "run"
    make_digits_loop(run, ScriptedProposer(DIGITS_ANSWERS), Recording(digits_evaluator),
                     replicates=2, **FIDELITY).run()
    archive = Archive(run)
    stages = archive.stages()
    for id, entry in stages.items():
        if id.startswith("g01-"):
            wanted = 2 if entry[CHEAP]["decision"] == "promoted" else 0
            assert len(archive.replicates(id)) == wanted, id
    assert len(archive.replicates("burn-cross_entropy")) == 2


def test_beating_the_best_baseline_lets_a_low_rank_through_only_beyond_noise():
    from selfdisco.discovery.search.fidelity import _rule
    from selfdisco.execution.records import Result

    def scored(correct: int, shift: int = 0, n: int = 400) -> Result:
        per_example = [1.0] * correct + [0.0] * (n - correct)
        per_example = per_example[shift:] + per_example[:shift]  # right on other examples
        return Result(status="scored", fitness=correct / n, stderr=0.0,
                      metrics={"per_prompt": per_example})

    baseline = ("focal", scored(300))
    # rank 3 of 4 with the top 2 kept: as good as the baseline, or above it inside the noise
    for correct in (300, 306):
        decision, rule = _rule(scored(correct, shift=60), 3, 4, 2, 0.25, baseline)
        assert decision == "stopped" and "focal" in rule
    decision, rule = _rule(scored(340, shift=60), 3, 4, 2, 0.25, baseline)
    assert decision == "promoted" and "more than 2 s.e." in rule
    assert _rule(scored(100), 1, 4, 2, 0.25, baseline)[0] == "promoted"  # the top 2 go on


def test_the_best_known_loss_includes_earlier_candidates_not_later_ones():
    from types import SimpleNamespace

    from selfdisco.discovery.search.fidelity import _best_known

    def row(id, name, generation):
        return SimpleNamespace(id=id, name=name, generation=generation)

    cheap = {"burn-focal": 0.80, "g01-c1": 0.90, "g02-c1": 0.85, "g03-c1": 0.99}
    rows = [row("g01-c1", "sharp", 1), row("g02-c1", "tempered", 2), row("g03-c1", "late", 3)]

    class Stages:
        def rows(self, where, params):
            assert "generation < ?" in where
            return [r for r in rows if r.generation < params[0]]

        def stage(self, id, stage):
            return {"result": {"status": "scored", "fitness": cheap[id], "stderr": 0.0,
                               "metrics": {}}}

    loop = SimpleNamespace(archive=Stages())
    baselines = [row("burn-focal", "focal", 0)]
    assert _best_known(loop, 1, baselines)[0] == "focal"
    name, result = _best_known(loop, 3, baselines)
    assert (name, result.fitness) == ("sharp", 0.90)

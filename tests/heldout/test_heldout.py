"""selfdisco heldout and the reward-vs-KL frontier: resuming after a kill, the time estimate,
the dominance rule and the report's section. Training and scoring are replaced at their seam
(HeldoutContext.evaluate) by a fast stand-in; the rest is the code that runs for real."""

from __future__ import annotations

import pytest

from selfdisco.config import load_config
from selfdisco.execution.records import Result
from selfdisco.heldout.frontier import FrontierPoint, dominance, dominated_by
from selfdisco.heldout.measure import HeldoutRequest, run_heldout
from selfdisco.heldout.session import choose_losses, fresh_seeds, measured_seconds
from selfdisco.launch.start import prepare_run_dir
from selfdisco.losses import catalog
from selfdisco.report import write_report
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import check_event, read_events

BETAS = [0.025, 0.05, 0.1, 0.25]
# Per loss: reward at KL -> 0 and KL scale; lrml reaches dpo's reward at 60% of its KL.
CURVES = {"g01-c1": (0.50, 1.2), "dpo": (0.60, 1.0), "lrml": (0.60, 0.6)}


class Killed(Exception):
    """Stands for the command being killed mid-way."""


class FakeTrials:
    """Trains and scores in no time: reward and KL follow CURVES; a seed shifts both a little.
    With kill_after=n it raises Killed at the n+1-th point, as a killed command stops."""

    def __init__(self, kill_after: int | None = None):
        self.kill_after = kill_after
        self.measured: list[tuple] = []

    def evaluate(self, point, code, task_options=None) -> Result:
        if self.kill_after is not None and len(self.measured) == self.kill_after:
            raise Killed
        assert code and task_options == {"kl_budget": 0, "kl_targets": "3,6"}
        self.measured.append((point.loss_id, point.beta, point.seed))
        top, scale = CURVES[point.loss_id]
        kl = scale * 0.3 / point.beta + (point.seed % 7) * 0.01
        reward = top - 0.3 / (1 + kl) + (point.seed % 5) * 0.002
        return Result(status="scored", fitness=reward, stderr=0.01,
                      metrics={"reward": reward, "reward_stderr": 0.01, "kl": kl,
                               "kl_stderr": 0.05},
                      timings={"train": 0.01, "score": 0.01})

    def policy(self):
        raise AssertionError("the frontier needs no policy client of its own")


@pytest.fixture
def run_dir(tmp_path):
    """A finished cpu-preset run: two scored discoveries, dpo from burn-in, measured timings
    (each trained with 2 seeds: 60 s training and 40 s scoring per seed)."""
    config = load_config("cpu", overrides={"discovery": {"replicates": 2}})
    run = prepare_run_dir(config, tmp_path / "run")
    archive = Archive(run)
    code = catalog.CATALOG["hinge"].candidate.code
    for id, kind, fitness, loss in (("burn-dpo", "burn_in", 0.35, "dpo"),
                                    ("g01-c1", "proposal", 0.36, "ipo"),
                                    ("g01-c2", "proposal", 0.30, "hinge")):
        archive.add(id, 1, kind, "scored", name=loss, fitness=fitness, stderr=0.02,
                    code=catalog.CATALOG[loss].candidate.code if loss != "hinge" else code,
                    timings={"data": 0.0, "train": 120.0, "score": 80.0})
        for k in range(2):
            archive.put_replicate(id, k, {"status": "scored", "fitness": fitness})
    archive.close()
    return run


def request(**more) -> HeldoutRequest:
    return HeldoutRequest(**{"protocols": ["frontier"], "betas": BETAS, "seeds": 2, **more})


def heldout_events(run):
    events = [e for e in read_events(run / "events.jsonl") if e["type"].startswith("heldout")]
    for event in events:
        check_event(event)
    return events


def test_a_killed_evaluation_reruns_only_the_missing_points(run_dir):
    first = FakeTrials(kill_after=5)
    with pytest.raises(Killed):
        run_heldout(run_dir, request(), trials=first, log=lambda text: None)
    archive = Archive(run_dir)
    recorded = {(r.loss_id, r.beta, r.seed) for r in archive.heldout_rows("frontier")}
    archive.close()
    assert recorded == set(first.measured) and len(recorded) == 5

    second = FakeTrials()
    run_heldout(run_dir, request(), trials=second, log=lambda text: None)
    assert not recorded & set(second.measured)
    assert len(second.measured) == 3 * 4 * 2 - 5
    archive = Archive(run_dir)
    rows = archive.heldout_rows("frontier")
    archive.close()
    assert len(rows) == 24 and {r.loss_id for r in rows} == {"g01-c1", "dpo", "lrml"}
    assert all(r.status == "done" and "summary" in r.metrics for r in rows)

    starts = [e for e in heldout_events(run_dir) if e["type"] == "heldout_started"]
    ends = [e for e in heldout_events(run_dir) if e["type"] == "heldout_finished"]
    assert [e["points"] for e in starts] == [24, 19]
    assert [e["stopped"] for e in ends] == [True, False]
    last = [e for e in heldout_events(run_dir) if e["type"] == "heldout_point"][-1]
    assert (last["done"], last["total"]) == (24, 24)
    write_report(run_dir)
    assert "## Held-out evaluation" in (run_dir / "report.md").read_text()

    third = FakeTrials()
    assert "nothing to measure" in run_heldout(run_dir, request(), trials=third,
                                               log=lambda text: None).text
    assert third.measured == []


def test_a_transient_failure_is_measured_again_and_a_failed_loss_is_not(run_dir):
    class Failing(FakeTrials):
        def evaluate(self, point, code, task_options=None):
            if point.beta == 0.25:
                cause = "server" if point.loss_id == "dpo" else "diverged"
                self.measured.append((point.loss_id, point.beta, point.seed))
                return Result.failed(cause, f"{cause} at beta 0.25")
            return super().evaluate(point, code, task_options)

    run_heldout(run_dir, request(), trials=Failing(), log=lambda text: None)
    again = FakeTrials()
    run_heldout(run_dir, request(), trials=again, log=lambda text: None)
    assert sorted(again.measured) == sorted(
        ("dpo", 0.25, seed) for seed in fresh_seeds(load_config("cpu"), 2))


def test_the_estimate_comes_from_the_runs_own_timings(run_dir):
    archive = Archive(run_dir)
    # per seed: (120 + 80) s over 2 replicates
    assert measured_seconds(archive) == {"data": 0.0, "train": 60.0, "score": 40.0}
    archive.close()
    estimate = run_heldout(run_dir, request(), trials=FakeTrials(), estimate_only=True)
    assert estimate.estimate_s == 24 * 100.0
    text = estimate.text
    assert "frontier: 24 of 24 points to measure (about 1m40s each" in text
    assert "estimated time: 40m00s" in text
    run_heldout(run_dir, request(), trials=FakeTrials(), log=lambda text: None)
    assert "nothing to measure" in run_heldout(run_dir, request(), trials=FakeTrials(),
                                               estimate_only=True).text


def test_a_run_that_trained_nothing_has_no_estimate(tmp_path):
    run = prepare_run_dir(load_config("cpu"), tmp_path / "run")
    text = run_heldout(run, request(), trials=FakeTrials(), estimate_only=True).text
    assert "frontier: 16 of 16 points" in text  # dpo and lrml: the run has no discoveries
    assert "no time estimate" in text


def test_losses_are_the_best_discoveries_then_the_references(run_dir):
    archive = Archive(run_dir)
    chosen = choose_losses(archive, top=2, references=["dpo", "lrml"])
    assert [loss.id for loss in chosen] == ["g01-c1", "g01-c2", "dpo", "lrml"]
    named = choose_losses(archive, top=1, references=[], names=["g01-c2", "lrml"])
    assert [loss.id for loss in named] == ["g01-c2", "lrml"]
    # burn-dpo has dpo's code: naming both keeps the first
    assert [loss.id for loss in choose_losses(archive, top=0, references=[],
                                              names=["burn-dpo", "dpo"])] == ["burn-dpo"]
    archive.close()


def test_fresh_seeds_differ_from_every_seed_the_run_trained_with():
    from selfdisco.seeds import derive, replicate_seed

    config = load_config("cpu", overrides={"discovery": {"replicates": 3}})
    train = derive(config.seed, "train")
    used = {replicate_seed(train, k) for k in range(3)}
    seeds = fresh_seeds(config, 4)
    assert len(set(seeds)) == 4 and not used & set(seeds)


def point(loss, beta, reward, kl, se=0.01, kl_se=0.1):
    return FrontierPoint(loss, beta, 2, reward, se, kl, kl_se)


def test_dominance_needs_more_reward_beyond_noise_at_no_more_kl():
    a = point("a", 0.1, 0.50, 2.0)
    assert dominated_by(a, [point("b", 0.1, 0.60, 1.5)])  # more reward, less KL
    assert dominated_by(a, [point("b", 0.1, 0.60, 2.0)])  # equal KL counts
    assert not dominated_by(a, [point("b", 0.1, 0.60, 2.1)])  # more KL
    assert not dominated_by(a, [point("b", 0.1, 0.52, 1.0)])  # 0.02 < 2 * sqrt(2) * 0.01
    unknown = point("a", 0.1, 0.50, 2.0, se=None)  # no standard errors: any gain counts
    assert dominated_by(unknown, [point("b", 0.1, 0.51, 1.0, se=None)])
    assert not dominated_by(a, [point("a", 0.2, 0.90, 1.0)])  # its own curve never counts


def test_dominance_per_loss_says_every_some_or_none_and_by_whom():
    summary = [point("dpo", 0.05, 0.60, 4.0), point("dpo", 0.1, 0.55, 2.0),
               point("lrml", 0.05, 0.64, 2.0), point("lrml", 0.1, 0.58, 1.0),
               point("new", 0.05, 0.40, 5.0), point("new", 0.1, 0.30, 0.5)]
    verdicts = dominance(summary)
    assert verdicts["lrml"] == "not dominated"
    assert verdicts["dpo"] == "dominated (every point, by lrml)"
    assert verdicts["new"] == "partly dominated (1 of 2 points: beta 0.05; by dpo, lrml)"


def test_the_report_section_shows_plot_table_dominance_and_the_paper(run_dir):
    run_heldout(run_dir, request(), trials=FakeTrials(), log=lambda text: None)
    write_report(run_dir)
    text = (run_dir / "report.md").read_text()
    section = text[text.index("## Held-out evaluation"):]
    assert "![reward vs KL](heldout_frontier.png)" in section
    assert (run_dir / "heldout_frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| loss | beta | seeds | reward | KL |" in section
    table = [line for line in section.splitlines() if line.startswith("| lrml | 0.1 | 2 |")]
    assert len(table) == 1 and table[0].count("±") == 2
    assert "Dominance rule:" in section
    assert "- **lrml**: not dominated" in section
    assert "- **g01-c1**: dominated (every point, by" in section
    assert "| dpo | 0.05 | 0.972 | 0.99 |" in section  # the paper's figures beside ours
    assert "GPT-2" in section and "VADER" in section and "SmolLM2-135M" in section


def test_bad_input_is_a_clear_error(run_dir, capsys):
    from selfdisco.cli import main

    assert main(["heldout", str(run_dir), "--betas", "0.1,x"]) == 2
    assert "--betas" in capsys.readouterr().err
    assert main(["heldout", str(run_dir), "--protocols", "nope", "--estimate"]) == 2
    assert "unknown held-out protocol 'nope'" in capsys.readouterr().err
    assert main(["heldout", str(run_dir), "--losses", "g09-c9", "--estimate"]) == 2
    assert "neither a candidate of this run nor a catalog loss" in capsys.readouterr().err
    assert main(["heldout", str(run_dir / "nothing")]) == 2
    assert "no run directory" in capsys.readouterr().err


def test_the_tui_and_the_progress_lines_show_each_point(run_dir):
    import io

    from selfdisco.tui.printer import Printer
    from selfdisco.tui.state import RunState

    out = io.StringIO()
    run_heldout(run_dir, request(losses=["dpo"], betas=[0.1]), trials=FakeTrials(),
                listeners=[Printer(out)], log=lambda text: None)
    printed = out.getvalue()
    assert "held-out evaluation: 2 points to measure (frontier; losses dpo), about 3 min" \
        in printed
    assert "held-out [2/2] frontier dpo beta=0.1 seed=" in printed and "reward 0." in printed
    assert "held-out [1/2]" in printed and "left\n" in printed  # the pace so far, one to come
    assert "held-out evaluation finished" in printed
    texts = [line.text for line in RunState.from_run_dir(run_dir).log]
    assert sum(text.startswith("held-out [") for text in texts) == 2


def test_estimate_as_json(run_dir, capsys):
    import json

    from selfdisco.cli import main

    assert main(["heldout", str(run_dir), "--estimate", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["estimate_s"] == 2400.0 and "points" not in result
    assert result["protocols"] == [{"name": "frontier", "total": 24, "missing": 24,
                                    "seconds_per_point": 100.0}]

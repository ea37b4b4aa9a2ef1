"""discovery.replicates: each candidate and baseline is trained with R seeds through the real
WorkerEvaluator; an executor stands in for the worker processes and scores a job's per-prompt
rewards from its training seed. Its combined fitness is the mean over seeds, its standard
error includes the seed variance, and a resumed run trains only the seeds that are missing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from loop_helpers import ScriptedProposer, answer, make_loop

from selfdisco import stats
from selfdisco.discovery.evaluation import WorkerEvaluator
from selfdisco.execution.records import Job, Result
from selfdisco.formatting import format_difference
from selfdisco.rundir.archive import Archive
from selfdisco.seeds import derive, replicate_seed
from selfdisco.train.settings import SMOKE_RECIPE

ANSWERS = [answer("cell_like", "0.5 * F.softplus(-1.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
           answer("steeper", "1.0 * F.softplus(-3.0 * x)")]
TRAIN_SEED = derive(0, "train")
PROMPTS = 8


class Killed(Exception):
    """Stands for the run's process dying before a job."""


class SeededExecutor:
    """Scores each job without a process: per-prompt rewards from the loss's code, a shift
    drawn from the job's training seed (seed noise) and per-prompt noise."""

    def __init__(self, kill_before: str | None = None):
        self.jobs: list[Job] = []
        self.kill_before = kill_before  # "id/r<k>": die when that job would start

    def map(self, job_dirs, timeout_s, on_progress=None, on_done=None, on_start=None):
        for job_dir in job_dirs:
            job = Job.from_dict(json.loads((Path(job_dir) / "job.json").read_text()))
            if f"{job.id}/r{job.replicate}" == self.kill_before:
                raise Killed(job.id)
            self.jobs.append(job)
            on_start(job_dir)
            rng = random.Random(f"{job.train_seed}:{job.code}")
            quality = {None: 0.0, 8: 0.5}.get(len(job.code or "") % 10 if job.code else None,
                                              0.45)
            shift = rng.gauss(0, 0.05) if job.code else 0.0
            scores = [quality + i / 20 + shift + rng.gauss(0, 0.02) for i in range(PROMPTS)]
            fitness, stderr = stats.mean_stderr(scores)
            on_done(job_dir, Result(status="scored", fitness=fitness, stderr=stderr,
                                    metrics={"per_prompt": scores, "kl": 1.0 + shift}))


def evaluator(run: Path, executor: SeededExecutor) -> WorkerEvaluator:
    template = Job(task="sentiment", task_options={}, task_preset="smoke", task_seed=1,
                   train_seed=TRAIN_SEED, model_path="model", cache_dir="cache",
                   ref_cache_dir="refcache", train_settings=SMOKE_RECIPE,
                   server_url="http://127.0.0.1:1/v1", served_model="policy")
    return WorkerEvaluator(run, template, executor, timeout_s=60)


def run_loop(run: Path, executor: SeededExecutor):
    loop = make_loop(run, ScriptedProposer(list(ANSWERS)), evaluator(run, executor),
                     generations=1, replicates=2)
    loop.run()
    loop.archive.close()


def test_each_candidate_is_trained_with_distinct_seeds_and_combined(tmp_path):
    run = tmp_path / "run"
    executor = SeededExecutor()
    run_loop(run, executor)
    archive = Archive(run)
    trained = [r for r in archive.rows("status = 'scored'") if r.code is not None]
    assert {r.id for r in trained} == {"burn-dpo", "burn-hinge", "g01-c1", "g01-c2"}
    seeds = {(j.id, j.replicate): j.train_seed for j in executor.jobs}
    assert [key for key in seeds if key[0] == "base"] == [("base", 0)]  # scored once
    for row in trained:
        assert seeds[(row.id, 0)] == TRAIN_SEED == replicate_seed(TRAIN_SEED, 0)
        assert seeds[(row.id, 1)] == replicate_seed(TRAIN_SEED, 1) != TRAIN_SEED
        assert (run / "candidates" / row.id / "r1" / "job.json").is_file()
        per_seed = archive.replicates(row.id)
        assert sorted(per_seed) == [0, 1]
        fits = [per_seed[k]["fitness"] for k in (0, 1)]
        assert row.fitness == pytest.approx(sum(fits) / 2)
        assert [e["train_seed"] for e in row.metrics["replicates"]] == [seeds[(row.id, 0)],
                                                                        seeds[(row.id, 1)]]
        # each seed's own per-prompt scores, for the seed-blocked comparison
        assert [e["per_prompt"] for e in row.metrics["replicates"]] == [
            per_seed[0]["metrics"]["per_prompt"], per_seed[1]["metrics"]["per_prompt"]]
        assert row.metrics["per_prompt"] == pytest.approx(
            [(x + y) / 2 for x, y in zip(per_seed[0]["metrics"]["per_prompt"],
                                         per_seed[1]["metrics"]["per_prompt"], strict=True)])
        assert row.metrics["kl"] == pytest.approx((per_seed[0]["metrics"]["kl"]
                                                   + per_seed[1]["metrics"]["kl"]) / 2)
    dpo = archive.get(stats.REFERENCE_ID)
    for row in (archive.get("g01-c1"), archive.get("g01-c2")):  # the archive keeps vs dpo
        recorded = row.metrics["vs_dpo"]
        assert recorded["paired"]
        assert recorded["difference"] == pytest.approx(
            sum(row.metrics["per_prompt"]) / PROMPTS - sum(dpo.metrics["per_prompt"]) / PROMPTS)
    # The last row recorded pooled the seed variance over every trained row, its own included.
    last = max(trained, key=lambda r: r.updated)
    pooled = stats.run_seed_variance(trained)
    assert pooled > 0
    own = stats.replicates_of(last)
    grid = [e["per_prompt"] for e in last.metrics["replicates"]]
    sampling_only = (sum(e**2 for _, e in own) / 2 / 2) ** 0.5
    assert last.stderr == pytest.approx(stats.replicate_stderr(own, pooled, grid))
    assert last.stderr > sampling_only * 1.2  # the seed shift (sd 0.05) dominates
    assert "pooled" in last.metrics["seed_variance"]
    archive.close()


def test_resume_trains_only_the_missing_seed(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(Killed):
        run_loop(run, SeededExecutor(kill_before="g01-c2/r1"))
    archive = Archive(run)
    assert archive.get("g01-c2").status == "training"
    assert sorted(archive.replicates("g01-c2")) == [0]
    archive.requeue_unfinished()  # as `selfdisco resume` does
    archive.close()
    executor = SeededExecutor()
    run_loop(run, executor)
    assert [(j.id, j.replicate) for j in executor.jobs] == [("g01-c2", 1)]
    archive = Archive(run)
    row = archive.get("g01-c2")
    assert row.status == "scored" and len(row.metrics["replicates"]) == 2
    archive.close()


def test_report_marks_ties_and_prints_the_correlation_with_kl(tmp_path):
    import numpy as np

    from selfdisco import report

    run = tmp_path / "run"
    run_loop(run, SeededExecutor())
    text = report.write_report(run).read_text()
    archive = Archive(run)
    rows = archive.rows("status = 'scored'")
    archive.close()
    comparison = stats.compare(rows)
    assert 2 <= len(comparison.tied) < len(rows)  # some tied with the best, some not
    ranking = text[text.index("## Ranking"):text.index("## Fitness")]  # not the other tables
    table = {line.split(" | ")[2].split()[0]: line for line in ranking.splitlines()
             if line.startswith("| ") and line.count(" | ") > 2
             and line.split(" | ")[2][:1] in "bg"}
    assert set(table) == {r.id for r in rows}
    for row in rows:
        tied, better = row.id in comparison.tied, row.id in comparison.better
        assert table[row.id].startswith(f"| {'=' if tied else ''} | {'>' if better else ''} |")
        if row.id != stats.REFERENCE_ID:  # the seed-blocked difference to dpo, with its s.e.
            assert format_difference(comparison.to_reference[row.id]) in table[row.id]
    assert stats.TIE_RULE in text and stats.BETTER_RULE in text
    assert f"{comparison.interaction.df} df" in text  # the pooled loss-by-seed interaction
    assert f"Tied with the best ({comparison.best.id}): " in text
    r = np.corrcoef([row.fitness for row in rows], [row.metrics["kl"] for row in rows])[0, 1]
    assert f"Correlation of fitness with KL across the {len(rows)} scored rows: r = {r:.2f}." \
        in text
    assert (run / "report_fitness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tui_table_shows_the_reports_ties_and_differences_to_dpo(tmp_path):
    from selfdisco.tui.state import RunState
    from selfdisco.tui.widgets import COLUMNS, _cells

    run = tmp_path / "run"
    run_loop(run, SeededExecutor())
    archive = Archive(run)
    recorded = stats.compare(archive.rows("status = 'scored'"))
    archive.close()
    state = RunState.from_run_dir(run)  # folded from the event log alone
    shown = state.comparison()
    assert shown.tied == recorded.tied and shown.best.id == recorded.best.id
    keys = [key for _, key in COLUMNS]
    for row in state.rows():
        if row.fitness is None:
            continue
        cells = dict(zip(keys, _cells(row, shown), strict=True))
        assert str(cells["tie"]) == ("best" if row.id == recorded.best.id
                                     else "=" if row.id in recorded.tied else "")
        if row.id != stats.REFERENCE_ID:
            assert str(cells["vs_dpo"]) == format_difference(recorded.to_reference[row.id])


def test_baselines_on_shared_seeds_give_one_seed_candidates_their_training_noise(tmp_path):
    # The default: candidates on one seed, the burn-in baselines on baseline_seeds shared
    # seeds, whose spread is the pooled loss-by-seed interaction of every comparison.
    run = tmp_path / "run"
    executor = SeededExecutor()
    loop = make_loop(run, ScriptedProposer(list(ANSWERS)), evaluator(run, executor),
                     generations=1, baseline_seeds=3)
    loop.run()
    loop.archive.close()
    trained = {(j.id, j.replicate) for j in executor.jobs}
    assert trained == {("base", 0), *((b, k) for b in ("burn-dpo", "burn-hinge")
                                      for k in range(3)),
                       ("g01-c1", 0), ("g01-c2", 0)}
    archive = Archive(run)
    rows = archive.rows("status = 'scored'")
    archive.close()
    comparison = stats.compare(rows)
    assert comparison.interaction.df == 2  # two losses on 3 shared seeds
    for id in ("g01-c1", "g01-c2"):
        d = comparison.to_reference[id]
        assert d.n_seeds == 1 and d.omitted == () and d.components["seed"] > 0
        recorded = next(r for r in rows if r.id == id).metrics["vs_dpo"]
        assert (recorded["seeds"], recorded["difference"]) == (1, pytest.approx(d.mean))


def test_replicates_below_one_is_refused():
    from selfdisco.config import load_config
    from selfdisco.errors import UserError

    with pytest.raises(UserError, match="discovery.replicates must be at least 1"):
        load_config("smoke", overrides={"discovery": {"replicates": 0}})
    assert load_config("smoke").discovery.replicates == 1

"""What held-out points are scored on (selfdisco.heldout.session): by default prompts the search
never scored and a sampling seed of their own, carried to the task through the job a held-out
worker reads; the search's own prompts only when asked for, and said so."""

from __future__ import annotations

import json

import pytest

from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.execution.records import Job, Result
from selfdisco.execution.worker import _task_context
from selfdisco.heldout import session
from selfdisco.heldout.measure import HeldoutRequest, run_heldout
from selfdisco.launch.start import prepare_run_dir
from selfdisco.llm.protocol import Completion
from selfdisco.losses import catalog
from selfdisco.rundir.archive import Archive
from selfdisco.seeds import derive
from selfdisco.tasks import TaskContext, get_task


class RecordingLLM:
    """Stands in for the policy server when a task scores: records each (opening, seed)."""

    def __init__(self):
        self.requests: list[tuple[str, int]] = []

    def complete(self, prompt, *, n, seed, **options):
        self.requests.append((prompt, seed))
        return [Completion(text=" a fine film.", finish_reason="length", token_ids=[1, 2])
                for _ in range(n)]


def scored(ctx: TaskContext) -> RecordingLLM:
    """What the sentiment task samples when it scores the base model in `ctx`."""
    client = RecordingLLM()
    ctx.client = client
    get_task("sentiment").score(ctx)
    return client


@pytest.fixture
def cpu_run(tmp_path):
    """A cpu-preset run with one scored discovery."""
    run = prepare_run_dir(load_config("cpu"), tmp_path / "run")
    archive = Archive(run)
    archive.add("g01-c1", 1, "proposal", "scored", name="ipo", fitness=0.4, stderr=0.02,
                code=catalog.CATALOG["ipo"].candidate.code,
                timings={"data": 0.0, "train": 30.0, "score": 60.0})
    archive.close()
    return run


@pytest.fixture
def jobs(monkeypatch):
    """The jobs held-out workers are given (written as job.json), with no server and no
    worker: each is answered with a score over 4 prompts."""
    written: list[Job] = []

    def run_job_process(job_dir, timeout):
        written.append(Job.from_dict(json.loads((job_dir / "job.json").read_text())))
        return Result(status="scored", fitness=0.5, stderr=0.01,
                      metrics={"per_prompt": [0.5, 0.4, 0.6, 0.5]}, timings={"train": 1.0})

    class Server:  # stands in for the vLLM server WorkerTrials starts
        base_url, model_name = "http://127.0.0.1:1/v1", "policy"

        def __init__(self, *args, **kwargs):
            pass

        def start(self):
            pass

        def stop(self):
            pass

    class Placement:
        def server_options(self, role):
            return {}

    monkeypatch.setattr(session, "resolve_model", lambda name: name)
    monkeypatch.setattr(session, "VLLMServer", Server)
    monkeypatch.setattr(session, "plan_run", lambda config: Placement())
    monkeypatch.setattr(session.topology, "sleep_url", lambda server: "")
    monkeypatch.setattr(session, "run_job_process", run_job_process)
    return written


def test_heldout_scores_on_openings_and_draws_the_search_never_used(cpu_run, jobs):
    request = HeldoutRequest(protocols=["confirm"], betas=[0.1], seeds=2,
                             options={"dpo_betas": "0.05,0.1", "tuning_seeds": "1"})
    run_heldout(cpu_run, request, log=lambda text: None)
    config = load_config("cpu")
    # the search's worker: the run's task options and its task seed
    search = scored(TaskContext(seed=derive(config.seed, "task"), preset=config.preset,
                                options=dict(config.task.options)))
    confirmation = [job for job in jobs if job.train_seed in session.fresh_seeds(config, 2)]
    assert len(confirmation) == 4  # the winner and dpo, 2 seeds each
    for job in confirmation:
        heldout = scored(_task_context(job, None))
        assert not {p for p, _ in heldout.requests} & {p for p, _ in search.requests}
        assert len({p for p, _ in heldout.requests}) == len(search.requests) == 32
        assert not {s for _, s in heldout.requests} & {s for _, s in search.requests}
        assert job.task_options["prompt_set"] == "unused"
        assert job.task_options["sampling_seed"] == derive(config.seed, "heldout-sampling")
    # dpo's beta is tuned on the search's own prompts and draws, never on the held-out ones
    tuning = [job for job in jobs if job not in confirmation]
    assert len(tuning) == 2  # one tuning seed, two betas
    assert all(scored(_task_context(job, None)).requests == search.requests for job in tuning)


def test_the_search_prompts_are_used_only_when_asked_for_and_said_so(cpu_run):
    config = load_config("cpu")
    unused = session.heldout_scoring(config, [])
    assert not unused.seen_by_search
    assert unused.line().startswith("scored on 32 held-out openings 33-64 of 157, which the "
                                    "search never scored")
    search = session.heldout_scoring(config, [], "search")
    assert search.seen_by_search and search.task_options == {
        "prompt_set": "search", "sampling_seed": -1, "fitness_version": 2}
    assert "not held out" in search.line() and "(--prompts search)" in search.line()
    assert session.heldout_scoring(config, [], count=100).text.startswith("100 held-out")


def test_too_few_unused_openings_and_bad_choices_are_clear_errors():
    config = load_config("cpu")
    with pytest.raises(UserError, match=r"157 held-out openings and the search scores the "
                                        r"first 32 \(eval_prompts\), so 125 remain, fewer "
                                        r"than the 126 asked for; .*--prompt-count"):
        session.heldout_scoring(config, [], count=126)
    with pytest.raises(UserError, match="--prompts 'all': choose unused"):
        session.heldout_scoring(config, [], "all")
    with pytest.raises(UserError, match="with --prompts unused"):
        session.heldout_scoring(config, [], "search", count=8)


def test_task_scored_rows_say_what_they_were_scored_on(cpu_run):
    scoring = session.heldout_scoring(load_config("cpu"), [])
    archive = Archive(cpu_run)
    events = []
    store = session.PointStore(archive, lambda type, **fields: events.append((type, fields)),
                               scoring)
    from selfdisco.heldout import RECORD_SEED, Point

    store.record(Point("frontier", "dpo", 0.1, 7), {"reward": 0.5})
    store.record(Point("pairwise", "dpo", 0.1, 7), {"win_rate": 0.5})
    store.record(Point("confirm", "statement:x", 0.0, RECORD_SEED), {"summary": "stated"})
    rows = {row.protocol: row for row in archive.heldout_rows()}
    archive.close()
    assert rows["frontier"].metrics["scoring"]["seen_by_search"] is False
    assert "which the search never scored" in rows["frontier"].metrics["note"]
    assert "scoring" not in rows["pairwise"].metrics  # its prompts are its own
    # a record is not a point: a log line, and no heldout_point counts it
    assert [type for type, _ in events] == ["heldout_point", "heldout_point", "log"]
    assert events[-1][1]["message"] == "stated"

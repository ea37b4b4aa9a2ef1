"""Jobs and results: one JSON round-trip each, causes set by type where a failure happens, and
the loop deciding by the cause (never by the reason's text)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import pytest
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop
from openai_server import OpenAIServer

from selfdisco.execution import worker
from selfdisco.execution.executors import JOB_FILE, LocalExecutor
from selfdisco.execution.records import RESULT_FILE, Job, Result
from selfdisco.llm.backend import free_port
from selfdisco.llm.client import LLMClient, LLMError, LLMUnavailable
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events
from selfdisco.tasks import EvaluationError
from selfdisco.train.settings import SMOKE_RECIPE, TrainSettings


def a_job(tmp_path, **changes) -> Job:
    job = Job(task="sentiment", task_options={"eval_prompts": 2}, task_preset="smoke",
              task_seed=11, train_seed=12, model_path="smoke", cache_dir=str(tmp_path / "cache"),
              ref_cache_dir=str(tmp_path / "cache" / "refcache"),
              train_settings=SMOKE_RECIPE,
              server_url=f"http://127.0.0.1:{free_port()}/v1", served_model="smoke",
              request_timeout_s=5.0)
    job = replace(job, **changes)
    return job.for_candidate("base", "base", None, str(tmp_path / "candidates" / "base"))


def test_a_job_round_trips_through_json(tmp_path):
    job = a_job(tmp_path).for_candidate("g01-c1", "steep", "def loss_fn(a, b, c, d, beta): ...",
                                        str(tmp_path))
    back = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back == job and isinstance(back.train_settings, TrainSettings)
    assert back.train_settings.target_modules == job.train_settings.target_modules


@pytest.mark.parametrize("result", [
    Result(status="scored", fitness=0.25, stderr=0.03, metrics={"kl": 0.4, "train": {"steps": 2}},
           timings={"train": 1.5, "score": 2.0}, adapter="/run/candidates/x/adapter"),
    Result.failed("diverged", "diverged at step 3: loss is inf", step=3,
                  metrics={"train": {"steps": 3}}),
    Result.failed("server", "LLMUnavailable: no answer from the LLM server", traceback="Trace"),
    Result(status="scored", fitness=0.1, replayed_from="burn-dpo", cached_from="first"),
])
def test_a_result_round_trips_through_json_and_the_archive(tmp_path, result):
    assert Result.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    archive = Archive(tmp_path)
    archive.add("c", 1, "proposal", "training")
    row = archive.update("c", **result.archive_fields())
    assert Result.from_row(row) == Result(**{**result.to_dict(), "traceback": None})
    archive.close()


def test_records_refuse_what_they_do_not_know(tmp_path):
    with pytest.raises(ValueError, match="unknown field.*colour"):
        Result.from_dict({"status": "scored", "fitness": 1.0, "colour": "red"})
    with pytest.raises(ValueError, match="status is one of scored, diverged, failed"):
        Result.from_dict({"status": "done"})
    with pytest.raises(ValueError, match="unknown cause 'bad luck'"):
        Result.failed("bad luck", "it happens")
    with pytest.raises(ValueError, match="scored result needs a numeric fitness"):
        Result(status="scored")
    with pytest.raises(ValueError, match="the result must be a JSON object"):
        Result.from_dict(["scored"])
    data = a_job(tmp_path).to_dict()
    del data["task"]
    with pytest.raises(ValueError, match="the job.*task"):
        Job.from_dict(data)
    data = a_job(tmp_path).to_dict()
    data["train_settings"]["lora_rank"] = 4
    with pytest.raises(ValueError, match="training settings has unknown field.*lora_rank"):
        Job.from_dict(data)


REFUSAL = (400, {"error": {"message": "model does not exist"}})


def refusing() -> OpenAIServer:
    """A server that answers every request with HTTP 400, as vLLM does a request it refuses."""
    return OpenAIServer(respond=lambda request: REFUSAL)


def test_server_failures_are_classified_by_type():
    with LLMClient(f"http://127.0.0.1:{free_port()}/v1", "m", retries=0) as closed:
        with pytest.raises(LLMUnavailable) as unavailable:
            closed.chat([{"role": "user", "content": "hi"}], max_tokens=2)
    assert worker.failure_cause(unavailable.value) == "server"
    with refusing() as server, LLMClient(server.url, "m") as client, \
            pytest.raises(LLMError) as refused:
        client.chat([{"role": "user", "content": "hi"}], max_tokens=2)
    assert worker.failure_cause(refused.value) == "server"
    # The same words from anything else are not the server's doing.
    assert worker.failure_cause(EvaluationError(str(refused.value))) == "candidate"
    assert worker.failure_cause(RuntimeError(str(unavailable.value))) == "error"


def test_the_worker_writes_a_server_caused_result(tmp_path):
    out = tmp_path / "candidates" / "base"
    out.mkdir(parents=True)
    with refusing() as server:
        job = a_job(tmp_path, server_url=server.url)
        (out / JOB_FILE).write_text(json.dumps(job.to_dict()))
        assert worker.main([str(out / JOB_FILE)]) == 0
    result = Result.from_dict(json.loads((out / RESULT_FILE).read_text()))
    assert (result.status, result.cause) == ("failed", "server")
    assert result.reason.startswith("LLMError") and "Traceback" in result.traceback


def test_a_bad_job_file_is_an_error_result(tmp_path):
    (tmp_path / JOB_FILE).write_text(json.dumps({"task": "sentiment"}))
    worker.main([str(tmp_path / JOB_FILE)])
    result = Result.from_dict(json.loads((tmp_path / RESULT_FILE).read_text()))
    assert (result.status, result.cause) == ("failed", "error")
    assert "the job" in result.reason


@pytest.mark.parametrize(("script", "cause", "words"), [
    ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed", "signal 9"),
    ("import pathlib, sys; pathlib.Path(sys.argv[1]).with_name('result.json').write_text('[')",
     "error", "unreadable"),
])
def test_the_executor_reports_a_worker_without_a_readable_result(tmp_path, script, cause, words):
    (tmp_path / JOB_FILE).write_text("{}")
    executor = LocalExecutor(1)
    executor.command = [sys.executable, "-c", script]
    results = []
    executor.map([tmp_path], timeout_s=60, on_done=lambda d, r: results.append(r))
    assert (results[0].status, results[0].cause) == ("failed", cause)
    assert words in results[0].reason


class FailingOnce(CurveEvaluator):
    """Fails each proposal's first evaluation with `cause`, the reason naming the LLM server."""

    def __init__(self, cause: str):
        super().__init__()
        self.cause = cause

    def evaluate(self, rows, on_progress, on_done, on_start=None, replicates=None):
        for row in rows:
            if row.kind == "proposal" and row.id not in self.evaluated:
                if on_start:
                    on_start(row)
                self.evaluated.append(row.id)
                on_done(row, Result.failed(self.cause, "LLMError: the LLM server refused it"))
            else:
                super().evaluate([row], on_progress, on_done, on_start, replicates)


@pytest.mark.parametrize(("cause", "retried"), [("server", True), ("candidate", False)])
def test_the_loop_retries_by_cause_not_by_reason(tmp_path, cause, retried):
    answers = [answer("steeper", "1.0 * F.softplus(-3.0 * x)"),
               answer("sig", "1.0 * torch.sigmoid(-2.0 * x)")]
    evaluator = FailingOnce(cause)
    loop = make_loop(tmp_path, ScriptedProposer(answers), evaluator, generations=1)
    loop.run()
    rows = {r.id: r for r in Archive(tmp_path).rows("kind = 'proposal'")}
    assert set(rows) == {"g01-c1", "g01-c2"}
    for id, row in rows.items():
        assert evaluator.evaluated.count(id) == (2 if retried else 1)
        if retried:
            assert row.status == "scored" and row.fitness is not None
        else:
            assert row.status == "failed" and Result.from_row(row).cause == cause
    logs = [e["message"] for e in read_events(tmp_path / "events.jsonl") if e["type"] == "log"]
    assert any("evaluating again" in m for m in logs) == retried

"""The evaluation worker (`python -m selfdisco.execution.worker`) trains candidate code confined:
past the static check, a hostile candidate reaches no file, server or library of the user's."""

from __future__ import annotations

import json

import pytest
from confine_helpers import (
    Target,
    hostile_code_trying_all,
    require_confinement,
    unchecked_env,
)

from selfdisco.execution.executors import JOB_FILE, run_job_process
from selfdisco.execution.records import Job
from selfdisco.llm.models import resolve_model
from selfdisco.train.settings import SMOKE_RECIPE

pytestmark = pytest.mark.integration


def test_a_worker_confines_a_candidate_past_the_static_check(vllm_smoke, tmp_path,
                                                              monkeypatch):
    require_confinement()
    monkeypatch.setenv("PYTHONPATH", unchecked_env(tmp_path / "bypass")["PYTHONPATH"])
    target = Target(tmp_path)
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    job = Job(task="sentiment", task_options={"eval_prompts": 4}, task_preset="smoke",
              task_seed=1, train_seed=2, model_path=resolve_model("smoke-llama"),
              cache_dir=str(tmp_path / "cache"), ref_cache_dir=str(tmp_path / "refcache"),
              train_settings=SMOKE_RECIPE.with_overrides(max_steps=2),
              server_url=vllm_smoke.base_url, served_model=vllm_smoke.model_name,
              id="g01-c1", name="hostile", code=hostile_code_trying_all(target.tried()),
              out_dir=str(job_dir))
    (job_dir / JOB_FILE).write_text(json.dumps(job.to_dict(), default=str))
    try:
        result = run_job_process(job_dir, timeout_s=600)
    finally:
        target.close()
    assert result.status == "failed" and result.cause == "candidate", result
    target.assert_all_refused(result.reason)

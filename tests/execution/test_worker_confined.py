"""The evaluation worker (`python -m selfdisco.execution.worker`) trains candidate code confined:
past the static check, a hostile candidate reaches no file, server or library of the user's."""

from __future__ import annotations

import json

import pytest
from confine_helpers import (
    Listener,
    acts,
    hostile_code_trying_all,
    outcomes,
    require_confinement,
    some_library,
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
    victim = tmp_path / "notes.txt"
    victim.write_text("the user's notes\n")
    library = tmp_path / "lib" / "helper.so"
    library.parent.mkdir()
    library.write_bytes(some_library().read_bytes())
    listener = Listener()
    tried = {"own_directory": "open('mine.txt', 'w').write('x')",
             **acts(victim, listener.port, library)}
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    job = Job(task="sentiment", task_options={"eval_prompts": 4}, task_preset="smoke",
              task_seed=1, train_seed=2, model_path=resolve_model("smoke-llama"),
              cache_dir=str(tmp_path / "cache"), ref_cache_dir=str(tmp_path / "refcache"),
              train_settings=SMOKE_RECIPE.with_overrides(max_steps=2),
              server_url=vllm_smoke.base_url, served_model=vllm_smoke.model_name,
              id="g01-c1", name="hostile", code=hostile_code_trying_all(tried),
              out_dir=str(job_dir))
    (job_dir / JOB_FILE).write_text(json.dumps(job.to_dict(), default=str))
    try:
        result = run_job_process(job_dir, timeout_s=600)
    finally:
        listener.close()
    assert result.status == "failed" and result.cause == "candidate", result
    found = outcomes(result.reason)
    assert found.pop("own_directory") == "DONE", result.reason
    assert sorted(found) == sorted(k for k in tried if k != "own_directory")
    assert all(o.startswith("REFUSED") and "NameError" not in o for o in found.values()), found
    assert victim.read_text() == "the user's notes\n"
    assert listener.accepted == 0

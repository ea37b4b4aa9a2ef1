"""Training under candidate code in a confined child (train/confined.py), on the smoke model.

The hostile tests bypass the static check in the child (confine_helpers.unchecked_env); each
escape must fail while a write to the child's own directory goes through.
"""

from __future__ import annotations

import json

import pytest
from confine_helpers import (
    Target,
    hostile_code,
    hostile_code_trying_all,
    require_confinement,
    unchecked_env,
)
from train_helpers import separable_pairs

from selfdisco.losses import Candidate, catalog, confine
from selfdisco.train.adapter import train_adapter
from selfdisco.train.confined import CHILD_DIR
from selfdisco.train.settings import SMOKE_RECIPE


def train(candidate: Candidate, out_dir, **kwargs):
    return train_adapter(model_path="smoke-llama", data=separable_pairs(4), candidate=candidate,
                         settings=SMOKE_RECIPE.with_overrides(max_steps=2), out_dir=out_dir,
                         **kwargs)


def test_a_confined_training_reports_progress_and_leaves_plain_files(tmp_path):
    require_confinement()
    steps = []
    result = train(catalog.get("dpo").candidate, tmp_path / "job",
                   ref_cache_dir=tmp_path / "refcache",
                   progress=lambda step, total, logs: steps.append((step, total)))
    assert result.status == "ok", result.error
    assert result.metrics["confined"] is True
    assert steps == [(1, 2), (2, 2)]
    job = tmp_path / "job"
    assert sorted(p.name for p in (job / "adapter").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((job / "metrics.json").read_text())["status"] == "ok"
    assert not (job / CHILD_DIR).exists()
    assert result.metrics["ref_cache"] == "reused"  # filled before the child, unconfined
    again = train(catalog.get("dpo").candidate, tmp_path / "again",
                  ref_cache_dir=tmp_path / "refcache")
    assert again.status == "ok" and again.metrics["ref_cache"] == "reused"


def test_unconfined_training_runs_in_this_process(tmp_path, monkeypatch):
    monkeypatch.setenv(confine.POLICY_ENV, "off")
    result = train(catalog.get("dpo").candidate, tmp_path / "job")
    assert result.status == "ok", result.error
    assert result.metrics["confined"] is False
    assert not (tmp_path / "job" / CHILD_DIR).exists()


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    require_confinement()
    monkeypatch.setenv("PYTHONPATH", unchecked_env(tmp_path / "bypass")["PYTHONPATH"])
    target = Target(tmp_path)
    yield target
    target.close()


def test_a_training_child_confines_a_candidate_past_the_static_check(hostile, tmp_path):
    """One child tries every escape in turn; only the write to its own directory goes through."""
    code = hostile_code_trying_all(hostile.tried())
    result = train(Candidate("", "hostile", code), tmp_path / "job")
    assert result.status == "failed"
    hostile.assert_all_refused(result.error)


def test_links_the_child_plants_are_not_followed(hostile, tmp_path):
    victim = hostile.victim
    plant = (f"os.symlink({str(victim)!r}, 'metrics.json')\n"
             f"os.symlink({str(victim)!r}, 'train_log.jsonl')")
    result = train(Candidate("", "links", hostile_code(plant)), tmp_path / "job")
    assert result.status == "failed"
    hostile.assert_untouched()
    assert not (tmp_path / "job" / "metrics.json").is_symlink()

"""The runtime-loss DPOTrainer against TRL's own trainer, on the tiny smoke model."""

from __future__ import annotations

import pytest
from train_helpers import BETA, assert_same, loss_and_grads, make_trainer

from selfdisco.llm.models import resolve_model
from selfdisco.losses import catalog, compile_loss
from selfdisco.train.refcache import RefCache


def catalog_loss(name: str):
    """A catalog loss compiled the way a discovered candidate is."""
    return compile_loss(catalog.get(name).candidate.code)


@pytest.fixture(scope="module")
def model_path() -> str:
    return resolve_model("smoke-llama")


@pytest.mark.parametrize(("name", "trl_loss_type"), [
    ("dpo", "sigmoid"), ("lrml", "discopop"), ("lrml_original", "discopop")])
def test_runtime_loss_reproduces_trl_loss_and_gradients(model_path, tmp_path, name,
                                                        trl_loss_type):
    ours = loss_and_grads(make_trainer(model_path, tmp_path, loss_fn=catalog_loss(name)))
    theirs = loss_and_grads(make_trainer(model_path, tmp_path, loss_type=trl_loss_type))
    assert abs(ours[2]["rho/mean"]) > 1e-3  # the policy differs from the reference
    assert_same(ours, theirs)


def test_different_losses_give_different_gradients(model_path, tmp_path):
    """The comparison above can fail: dpo and lrml differ on the same batch, in their
    gradients alone too."""
    a = loss_and_grads(make_trainer(model_path, tmp_path, loss_fn=catalog_loss("dpo")))
    b = loss_and_grads(make_trainer(model_path, tmp_path, loss_fn=catalog_loss("lrml")))
    with pytest.raises(AssertionError):
        assert_same(a, b)
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        assert_same((b[0], a[1], b[2]), b)  # lrml's loss and metrics, dpo's gradients


def test_rho_statistics_are_logged(model_path, tmp_path):
    trainer = make_trainer(model_path, tmp_path, loss_fn=catalog_loss("dpo"))
    _, _, metrics = loss_and_grads(trainer)
    # TRL's margin is beta * mean(rho); the statistics describe the same rho.
    assert metrics["rewards/margins"] == pytest.approx(metrics["rho/mean"] * BETA, rel=1e-4)
    assert metrics["rho/min"] < metrics["rho/mean"] < metrics["rho/max"]
    assert metrics["rho/std"] > 0


def test_cached_reference_gives_the_same_loss(model_path, tmp_path):
    cache = RefCache(tmp_path / "refcache")
    dpo = catalog_loss("dpo")
    on_the_fly = make_trainer(model_path, tmp_path, loss_fn=dpo)
    cached = make_trainer(model_path, tmp_path, loss_fn=dpo, ref_cache=cache)
    assert cached.ref_cache_status == "computed"
    assert "ref_chosen_logps" in cached.train_dataset.column_names
    assert "ref_chosen_logps" not in on_the_fly.train_dataset.column_names
    rows = [5, 1, 6, 2]  # a different grouping from the cache's batches of 4
    assert_same(loss_and_grads(cached, rows), loss_and_grads(on_the_fly, rows))

    reused = make_trainer(model_path, tmp_path, loss_fn=dpo, ref_cache=cache)
    assert reused.ref_cache_status == "reused"
    assert reused.ref_cache_path == cached.ref_cache_path
    assert_same(loss_and_grads(reused, rows), loss_and_grads(on_the_fly, rows))


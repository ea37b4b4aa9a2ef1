"""The runtime-loss DPOTrainer against TRL's own trainer, on the tiny smoke model."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from selfdisco.llm.models import model_identity, resolve_model
from selfdisco.losses import catalog, compile_loss
from selfdisco.train.refcache import RefCache
from selfdisco.train.trainer import RuntimeLossDPOTrainer

BETA = 0.05  # the paper's beta; at beta = tau = 0.05 lrml_original equals TRL's discopop too


def catalog_loss(name: str):
    """A catalog loss compiled the way a discovered candidate is."""
    return compile_loss(catalog.get(name).candidate.code)


PAIRS = [
    {"prompt": f"Review {i}: the film was", "chosen": " moving and bright" + " yes" * (i % 3),
     "rejected": " dull" + " no" * (i % 4)}
    for i in range(8)
]


@pytest.fixture(scope="module")
def model_path() -> str:
    return resolve_model("smoke-llama")


def make_trainer(model_path, tmp_path, *, loss_fn=None, loss_type="sigmoid", ref_cache=None):
    """Our trainer when loss_fn is given, else TRL's with loss_type. A random (non-zero) LoRA
    init makes the policy differ from the reference, so rho is not zero."""
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, beta=BETA,
                     max_length=64, loss_type=loss_type, use_cpu=True, bf16=False, seed=0,
                     max_steps=1, save_strategy="no", report_to=[], disable_tqdm=True)
    from datasets import Dataset

    common = dict(args=args, train_dataset=Dataset.from_list(PAIRS), processing_class=tokenizer,
                  peft_config=lora)
    if loss_fn is None:
        return DPOTrainer(model, **common)
    return RuntimeLossDPOTrainer(model, loss_fn=loss_fn, ref_cache=ref_cache,
                                 model_identity=model_identity(model_path), **common)


def loss_and_grads(trainer, rows=range(4)):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    loss.backward()
    grads = {name: param.grad.detach().clone()
             for name, param in trainer.model.named_parameters() if param.requires_grad}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), grads, metrics


def assert_same(a, b):
    """Equal up to float32 rounding: the two sides may order their sums differently (another
    formula, another batch grouping for the reference), which moves log-probs of about -90 by
    a few units in the last place (1e-5) and a gradient element by about 1e-6 of its tensor's
    largest element, however much its own terms cancel. Any real difference is far larger."""
    loss_a, grads_a, metrics_a = a
    loss_b, grads_b, metrics_b = b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-7)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        scale = float(grads_b[name].abs().max())
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-5, atol=1e-5 * scale)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected"):
        assert metrics_a[name] == pytest.approx(metrics_b[name], rel=1e-5, abs=1e-5), name


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


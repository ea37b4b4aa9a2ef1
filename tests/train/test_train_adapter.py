"""train_adapter end to end on the smoke model: outputs, divergence, failure, learning."""

from __future__ import annotations

import gc
import json

import pytest
import torch
from train_helpers import separable_pairs

from selfdisco.errors import UserError
from selfdisco.llm.models import resolve_model
from selfdisco.losses import catalog, compile_loss
from selfdisco.train.adapter import train_adapter
from selfdisco.train.settings import SMOKE_RECIPE, TrainSettings

dpo = compile_loss(catalog.get("dpo").candidate.code)


def smoke(**changes) -> TrainSettings:
    return SMOKE_RECIPE.with_overrides(**changes)


def test_writes_adapter_metrics_and_log(tmp_path):
    result = train_adapter(model_path="smoke-llama", data=separable_pairs(8), loss_fn=dpo,
                           settings=smoke(max_steps=3), out_dir=tmp_path,
                           ref_cache_dir=tmp_path / "refcache")
    assert result.status == "ok", result.error
    assert result.steps_done == 3
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and not config["modules_to_save"]
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["status"] == "ok" and saved["settings"]["max_steps"] == 3
    steps = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2, 3]
    for key in ("rewards/accuracies", "rewards/margins", "logps/chosen", "rho/mean", "rho/std",
                "rho/min", "rho/max"):
        assert key in result.metrics
    assert result.metrics["ref_cache"] == "computed"
    assert result.seconds_per_step > 0 and result.peak_rss_mb > 0


def test_the_trained_model_is_freed_before_train_adapter_returns(tmp_path):
    """The worker loads the KL model next; the trainer's cycles must not keep its model."""
    from transformers import PreTrainedModel

    gc.collect()
    gc.disable()  # only the collection train_adapter makes may free the trainer's cycles
    try:
        result = train_adapter(model_path="smoke-llama", data=separable_pairs(4), loss_fn=dpo,
                               settings=smoke(max_steps=1), out_dir=tmp_path)
        alive = [type(o).__name__ for o in gc.get_objects() if isinstance(o, PreTrainedModel)]
    finally:
        gc.enable()
    assert result.status == "ok", result.error
    assert alive == []


def test_nan_loss_mid_training_is_a_diverged_result(tmp_path):
    calls = []

    def nan_after_three(pc, pr, rc, rr, beta):
        calls.append(1)
        losses = dpo(pc, pr, rc, rr, beta)
        return losses * float("nan") if len(calls) > 3 else losses

    (tmp_path / "adapter").mkdir()  # as if an earlier run had succeeded here
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    result = train_adapter(model_path="smoke-llama", data=separable_pairs(8),
                           loss_fn=nan_after_three, settings=smoke(max_steps=8),
                           out_dir=tmp_path)
    assert result.status == "diverged"
    assert result.steps_done == 4
    assert result.error == "diverged at step 4: non-finite loss"
    assert result.adapter_path is None and not (tmp_path / "adapter").exists()
    last = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert result.metrics["loss"] == pytest.approx(next(r for r in last if r["step"] == 3)["loss"])
    assert next(r for r in last if r["step"] == 4)["diverged"] == "non-finite loss"
    assert len(calls) == 4  # training stopped at once


def test_nan_gradient_with_finite_loss_is_a_diverged_result(tmp_path):
    def nan_gradient(pc, pr, rc, rr, beta):
        zero = pc - pc
        return dpo(pc, pr, rc, rr, beta) + 0.0 * torch.sqrt(zero)  # d sqrt(0) = inf, times 0

    result = train_adapter(model_path="smoke-llama", data=separable_pairs(8),
                           loss_fn=nan_gradient, settings=smoke(max_steps=4), out_dir=tmp_path)
    assert result.status == "diverged"
    assert result.error == "diverged at step 1: non-finite gradient"


def test_a_loss_that_raises_is_a_failed_result(tmp_path):
    def broken(pc, pr, rc, rr, beta):
        return pc @ torch.ones(3)

    result = train_adapter(model_path="smoke-llama", data=separable_pairs(8), loss_fn=broken,
                           settings=smoke(), out_dir=tmp_path)
    assert result.status == "failed"
    assert result.error.startswith("RuntimeError:") and "\n" not in result.error
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_bad_data_fails_before_the_model_loads(tmp_path):
    with pytest.raises(UserError, match="missing column"):
        train_adapter(model_path="/no/such/model", data=[{"prompt": "p", "chosen": "c"}],
                      loss_fn=dpo, settings=smoke(), out_dir=tmp_path)


def sequence_logps(model, tokenizer, prompt: str, completion: str) -> float:
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    logps = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return logps[len(prompt_ids) - 1:].sum().item()


def reward_accuracy(adapter_path: str, pairs: list[dict]) -> float:
    """Share of pairs whose implicit reward margin is positive, from the saved adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smoke-llama")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), adapter_path)
    model.eval()
    correct = 0
    for pair in pairs:
        policy = [sequence_logps(model, tokenizer, pair["prompt"], pair[k])
                  for k in ("chosen", "rejected")]
        with model.disable_adapter():
            ref = [sequence_logps(model, tokenizer, pair["prompt"], pair[k])
                   for k in ("chosen", "rejected")]
        correct += (policy[0] - ref[0]) > (policy[1] - ref[1])
    return correct / len(pairs)


def test_dpo_training_raises_reward_accuracy(tmp_path):
    result = train_adapter(model_path="smoke-llama", data=separable_pairs(16), loss_fn=dpo,
                           settings=smoke(max_steps=24, learning_rate=5e-3), out_dir=tmp_path,
                           ref_cache_dir=tmp_path / "refcache")
    assert result.ok, result.error
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 24
    # The fresh adapter is the reference: rho is zero up to float32 rounding of log-probs of
    # about -90 (the reference's come from other batches), which is near 1e-5, not 1e-3.
    assert max(abs(steps[0]["rho/min"]), abs(steps[0]["rho/max"])) < 1e-3
    assert min(r["rewards/accuracies"] for r in steps[-5:]) == 1.0
    # Held-out pairs, scored from the saved adapter with plain transformers + peft.
    assert reward_accuracy(result.adapter_path, separable_pairs(12, offset=100)) >= 0.9


def test_a_prompt_longer_than_max_length_is_cut_not_dropped(tmp_path):
    """A proposer's context can outgrow max_length; its pairs still train (prompt kept from
    its end) instead of leaving an empty dataset."""
    long = [dict(p, prompt=" ".join(["a long context"] * 60) + p["prompt"])
            for p in separable_pairs(4)]
    result = train_adapter(model_path="smoke-llama", data=long, loss_fn=dpo,
                           settings=smoke(max_steps=2, max_length=48, max_prompt_length=32),
                           out_dir=tmp_path)
    assert result.status == "ok", result.error
    assert result.steps_done == 2

"""The training seed fixes the LoRA initialisation and the data order, on the path a worker
trains by (train_adapter under candidate code, confined where this machine can): the premise of
comparing losses blocked by seed (issue 27)."""

from __future__ import annotations

import json

from safetensors.torch import load_file
from train_helpers import separable_pairs

from selfdisco.losses import catalog
from selfdisco.train.adapter import train_adapter
from selfdisco.train.settings import SMOKE_RECIPE

# A learning rate this small leaves the adapter at its initialisation, and the policy's
# log-probs on each batch depend on which pairs the batch holds: the data order.
STILL = SMOKE_RECIPE.with_overrides(max_steps=4, learning_rate=1e-12, batch_size=2)


def trained(tmp_path, name: str, seed: int) -> tuple[dict, list[float]]:
    out = tmp_path / name
    result = train_adapter(model_path="smoke-llama", data=separable_pairs(8),
                           candidate=catalog.get("dpo").candidate, settings=STILL, seed=seed,
                           out_dir=out)
    assert result.status == "ok", result.error
    weights = load_file(out / "adapter" / "adapter_model.safetensors")
    lora_a = {k: v for k, v in weights.items() if "lora_A" in k}
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    order = [s["logps/chosen"] for s in steps if "loss" in s]
    return lora_a, order


def test_one_seed_twice_gives_the_same_start_and_order_two_seeds_differ(tmp_path):
    first_a, first_order = trained(tmp_path, "s1", seed=1)
    again_a, again_order = trained(tmp_path, "s1-again", seed=1)
    other_a, other_order = trained(tmp_path, "s2", seed=2)
    assert first_a and set(first_a) == set(again_a) == set(other_a)
    assert all((first_a[k] == again_a[k]).all() for k in first_a)
    assert first_order == again_order and len(first_order) == 4
    largest = max(float((first_a[k] - other_a[k]).abs().max()) for k in first_a)
    assert largest > 0.01, largest  # a different initialisation, not rounding
    assert other_order != first_order

"""Pieces the training tests share (train/, export/, losses/).

separable_pairs are preference pairs a tiny model can learn. make_trainer builds our
runtime-loss DPOTrainer or TRL's own on one fixed batch of PAIRS with the same LoRA init, so
that loss_and_grads of the two can be compared with assert_same.
"""

from __future__ import annotations

import pytest
import torch

BETA = 0.05  # the paper's beta; at beta = tau = 0.05 lrml_original equals TRL's discopop too

PAIRS = [
    {"prompt": f"Review {i}: the film was", "chosen": " moving and bright" + " yes" * (i % 3),
     "rejected": " dull" + " no" * (i % 4)}
    for i in range(8)
]

GOOD = ["a joy", "wonderful", "so warm and funny", "a delight", "brilliant fun"]
BAD = ["a bore", "awful", "so cold and dull", "a mess", "tedious junk"]


def separable_pairs(n: int, offset: int = 0) -> list[dict]:
    """Chosen completions praise, rejected ones pan: a difference a tiny model can learn."""
    return [{"prompt": f"Review {offset + i}: this film is",
             "chosen": " " + GOOD[(offset + i) % len(GOOD)],
             "rejected": " " + BAD[(offset + 2 * i) % len(BAD)]} for i in range(n)]


def trainer_arguments(model_path, tmp_path, **dpo_options) -> dict:
    """A DPO trainer's arguments but the model: a random (non-zero) LoRA init, so the policy
    differs from the reference and rho is not zero; PAIRS; one step at BETA on the CPU."""
    # Imported here, not at the top: a test that needs only separable_pairs loads no TRL.
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig

    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")
    args = DPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, beta=BETA,
                     max_length=64, use_cpu=True, bf16=False, seed=0, max_steps=1,
                     save_strategy="no", report_to=[], disable_tqdm=True, **dpo_options)
    return dict(args=args, train_dataset=Dataset.from_list(PAIRS),
                processing_class=AutoTokenizer.from_pretrained(model_path), peft_config=lora)


def make_trainer(model_path, tmp_path, *, loss_fn=None, loss_type="sigmoid", ref_cache=None):
    """Our trainer when loss_fn is given, else TRL's with loss_type."""
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    from selfdisco.llm.models import model_identity
    from selfdisco.train.trainer import RuntimeLossDPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    common = trainer_arguments(model_path, tmp_path, loss_type=loss_type)
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

"""Training settings for LoRA preference training: the TrainSettings type and the recipes that
more than one task starts from. Each task's recipe per preset is in its own module
(selfdisco/tasks/sentiment.py, mtbench.py: TRAIN_RECIPES).

Light module: no torch. Adapters must load in vLLM, so ranks stay within its --max-lora-rank
(16 by default here) and targets are the attention projections every vLLM LoRA model supports.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from selfdisco.errors import UserError
from selfdisco.train.tracking import check_trackers

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")

@dataclass
class TrainSettings:
    """One LoRA preference-training recipe.

    Attributes:
        lora_r: LoRA rank; at most vLLM's --max-lora-rank (16) so the adapter can be served.
        lora_alpha: LoRA scaling numerator (the update is scaled by alpha / r).
        lora_dropout: dropout inside the adapter (TRL disables model dropout during DPO anyway).
        target_modules: module names that get adapters; never lm_head or embeddings.
        learning_rate: AdamW learning rate for the adapter weights.
        max_steps: optimizer steps.
        batch_size: preference pairs per micro-batch (the forward pass holds 2x rows).
        grad_accum: micro-batches per optimizer step.
        max_length: tokens kept of prompt + completion (the start is kept).
        max_prompt_length: tokens kept of the prompt (its end is kept); None keeps all.
        beta: the loss's inverse temperature, passed to the loss function.
        seed: seed for adapter initialisation and data order.
        use_cpu: train on the CPU even where a GPU exists.
        bf16: bfloat16 mixed precision (GPU only).
        gradient_checkpointing: recompute activations in backward (saves memory, GPU recipe).
        lr_scheduler: transformers scheduler name ("constant", "cosine", ...).
        warmup_ratio: fraction of steps with a linear warm-up.
        report_to: experiment trackers that get the training logs (TRL's report_to):
            "tensorboard", "wandb"; empty (the default) or ["none"] sends them nowhere. Not part
            of the recipe: tracking changes no result.
    """

    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ATTENTION_PROJECTIONS
    learning_rate: float = 1e-4
    max_steps: int = 32
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 128
    max_prompt_length: int | None = 64
    beta: float = 0.05
    seed: int = 0
    use_cpu: bool = True
    bf16: bool = False
    gradient_checkpointing: bool = False
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    report_to: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.target_modules = tuple(self.target_modules)
        self.report_to = tuple(self.report_to)

    def with_overrides(self, **changes) -> TrainSettings:
        """A copy with some fields changed; an unknown name, a wrong type or a value out of
        range is a UserError that names the setting."""
        known = asdict(self)
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise UserError(f"unknown training setting(s): {', '.join(unknown)}; known: "
                            f"{', '.join(known)}")
        checked = {name: _checked(name, value) for name, value in changes.items()}
        return replace(self, **checked)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["target_modules"] = list(self.target_modules)
        data["report_to"] = list(self.report_to)
        return data

    def recipe(self) -> dict:
        """What a training result depends on: every setting but the trackers."""
        data = self.to_dict()
        del data["report_to"]
        return data


# Beyond its type (the default's): what a setting accepts, as a test and in words.
_POSITIVE = (lambda v: v >= 1, "at least 1")
_RANGES = {
    "lora_r": _POSITIVE, "lora_alpha": _POSITIVE, "max_steps": _POSITIVE,
    "batch_size": _POSITIVE, "grad_accum": _POSITIVE, "max_length": _POSITIVE,
    "max_prompt_length": _POSITIVE,
    "learning_rate": (lambda v: v > 0, "above 0"), "beta": (lambda v: v > 0, "above 0"),
    "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "warmup_ratio": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "target_modules": (lambda v: len(v) > 0, "a non-empty list of module names"),
}
_KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false",
               str: "a string", tuple: "a list of module names"}


def _checked(name: str, value: Any) -> Any:
    """The value for a setting, or a UserError saying what the setting needs."""
    kind = type(getattr(TrainSettings(), name))  # the default's type (max_prompt_length: int)
    if name == "report_to":
        return check_trackers(value)
    if name == "max_prompt_length" and value is None:
        return None
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is float and is_number:
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"training setting {name} must be a finite number, not {value!r}")
    elif kind is tuple and isinstance(value, list | tuple) and all(
            isinstance(v, str) for v in value):
        value = tuple(value)
    elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"training setting {name} must be {_KIND_WORDS[kind]}, not {value!r}")
    test, words = _RANGES.get(name, (lambda v: True, ""))
    if not test(value):
        raise UserError(f"training setting {name} must be {words}, not {value!r}")
    return value


# The tiny random Llama (the smoke preset's policy): a handful of steps, just enough to exercise
# the whole path. Tasks copy it (dataclasses.replace) before changing a field.
SMOKE_RECIPE = TrainSettings(lora_r=8, lora_alpha=16, learning_rate=1e-3, max_steps=4,
                             batch_size=4, max_length=64, max_prompt_length=32)
# The paper's recipe as LoRA on one GPU: beta 0.05, cosine with 10% warm-up, effective batch
# 128 (2 x 64), max length 1024 (prompt 512), seed 42, about 2 epochs of dpo-mix-7k. The
# learning rate is raised from the paper's 5e-7 (full fine-tuning) to a LoRA-sized 5e-6.
PAPER_RECIPE = TrainSettings(lora_r=16, lora_alpha=32, learning_rate=5e-6, max_steps=105,
                             batch_size=2, grad_accum=64, max_length=1024, max_prompt_length=512,
                             beta=0.05, seed=42, use_cpu=False, bf16=True,
                             gradient_checkpointing=True, lr_scheduler="cosine",
                             warmup_ratio=0.1)

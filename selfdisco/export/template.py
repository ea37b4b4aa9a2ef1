"""The Python files of an export: loss.py (the candidate's code as a standalone function) and
trainer.py (a TRL DPOTrainer that trains under it with the recipe's settings)."""

from __future__ import annotations

import ast
import importlib.util
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfdisco.export.recipe import ENTRY, RECIPE_FILE, TRL_LOSS_TYPES
from selfdisco.formatting import format_fitness
from selfdisco.losses import Candidate, catalog, check_code, screen
from selfdisco.losses.fingerprint import VERSION, Fingerprint

if TYPE_CHECKING:
    from selfdisco.export.recipe import Recipe

ARGS = ("policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
        "reference_rejected_logps")
WRAPPED_ARGS = ARGS.replace(" reference_chosen", "\n        reference_chosen")
# Code the exported trainer runs exactly as selfdisco's own trainer does, copied from that
# module's source (selfdisco/train/trainer.py) when an export is written: a placeholder of
# TRAINER_TEMPLATE -> the definition's path in that module. These use no project names.
TRAINER_MODULE = "selfdisco.train.trainer"
SHARED_CODE = {"first_outputs": ("_FirstOutputs",),
               "prepare_dataset": ("RuntimeLossDPOTrainer", "_prepare_dataset")}


def trl_equivalent(code: str, tolerance: float, fingerprint: dict | None = None) -> str:
    """The built-in TRL loss_type that trains like `code` (the project's de-duplication
    fingerprint: policy gradients equal up to a positive factor), or "" when none does."""
    mine = Fingerprint.from_dict(fingerprint) if fingerprint else None
    if mine is None or mine.version != VERSION:
        result = screen(Candidate(thought="", name="export", code=code))
        mine = result.fingerprint if result.ok else None
    if mine is None:
        return ""
    for name, loss_type in TRL_LOSS_TYPES.items():
        theirs = screen(catalog.get(name).candidate).fingerprint
        if theirs is not None and mine.is_duplicate(theirs, tolerance):
            return loss_type
    return ""


def _imports(code: str) -> list[str]:
    """The import lines for the names the candidate's code uses (the compiler binds them)."""
    checked = check_code(code)
    lines = set()
    for name, module in checked.module_names.items():
        lines.add(f"import {module}" if name == module else f"import {module} as {name}")
    for name, (module, attr) in checked.imported_values.items():
        lines.add(f"from {module} import {attr}" + ("" if name == attr else f" as {name}"))
    if checked.method_form:
        lines.add("from types import SimpleNamespace")
    return sorted(lines)


def _entry(code: str) -> str:
    """per_pair_loss: the candidate's function called in the project's (and TRL's) order."""
    checked = check_code(code)
    fn = checked.function_name
    if not checked.method_form and checked.takes_beta:
        return "" if fn == ENTRY else f"{ENTRY} = {fn}\n"
    first = "SimpleNamespace(beta=beta), " if checked.method_form else ""  # reads self.beta
    return (f"def {ENTRY}({WRAPPED_ARGS}, beta):\n"
            f'    """{fn} in the order (four log-prob tensors, beta)."""\n'
            f"    return {fn}({first}{WRAPPED_ARGS})\n")


def _equivalence(recipe: Recipe) -> str:
    if not recipe.trl_loss_type:
        return ("No built-in TRL loss_type trains like it (compared by the project's "
                "de-duplication fingerprint).")
    return (f'It trains like TRL\'s built-in loss_type="{recipe.trl_loss_type}": their policy '
            "gradients agree up to a positive factor (the project's de-duplication "
            "fingerprint), which AdamW does not tell apart.")


def loss_module(recipe: Recipe) -> str:
    """loss.py: a docstring saying where the loss came from, its imports and exact code."""
    fitness = format_fitness(recipe.fitness, recipe.stderr, missing="none")
    n = f" (n={recipe.n})" if recipe.n is not None else ""
    origin = (f"Run {recipe.run}, candidate {recipe.id}. Fitness {fitness}{n} on the "
              f"{recipe.task} task ({recipe.task_preset} preset), mean over "
              f"{len(recipe.train_seeds)} training seed(s); the recipe that produced it is in "
              f"{RECIPE_FILE}.")
    use = (f"{ENTRY}({ARGS}, beta) returns one loss per preference pair (shape (B,)); "
           "training minimises their mean. Log-probs are summed over each completion's tokens. "
           f"{_equivalence(recipe)}")
    doc = (f'"""{recipe.name}: a preference-optimization loss discovered by selfdisco.\n\n'
           f'{_wrap(origin)}\n\n{_wrap(use)}\n"""\n')
    code = recipe.code.rstrip() + "\n"
    entry = _entry(recipe.code)
    return (doc + "\n" + "\n".join(_imports(recipe.code)) + "\n\n\n" + code
            + ("\n\n" + entry if entry else ""))


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=99, break_long_words=False, break_on_hyphens=False)


def dpo_args(recipe: Recipe) -> dict[str, Any]:
    """The recipe's training settings as DPOConfig arguments (as selfdisco's trainer sets them;
    selfdisco/train/adapter.py trainer_parts)."""
    t = recipe.train
    return {"max_steps": t.max_steps, "per_device_train_batch_size": t.batch_size,
            "gradient_accumulation_steps": t.grad_accum, "learning_rate": t.learning_rate,
            "lr_scheduler_type": t.lr_scheduler, "warmup_steps": t.warmup_ratio,
            "beta": t.beta, "max_length": t.max_length, "seed": recipe.train_seeds[0],
            "use_cpu": t.use_cpu, "bf16": t.bf16,
            "gradient_checkpointing": t.gradient_checkpointing, "logging_steps": 1,
            "save_strategy": "no", "report_to": []}


def trainer_module(recipe: Recipe) -> str:
    """trainer.py: a DPOTrainer subclass whose loss is loss.py's, and the recipe's settings."""
    t = recipe.train
    lora = {"r": t.lora_r, "lora_alpha": t.lora_alpha, "lora_dropout": t.lora_dropout,
            "target_modules": list(t.target_modules), "bias": "none", "task_type": "CAUSAL_LM"}
    return TRAINER_TEMPLATE.format(
        name=recipe.name, id=recipe.id, run=recipe.run, entry=ENTRY,
        equivalence=_wrap(_equivalence(recipe)), trl_loss_type=recipe.trl_loss_type,
        dpo_args=_literal(dpo_args(recipe)), lora=_literal(lora),
        max_prompt_length=t.max_prompt_length, model=recipe.model_path,
        **{placeholder: shared_code(*path) for placeholder, path in SHARED_CODE.items()})


def shared_code(*path: str) -> str:
    """The source text of a definition in selfdisco's trainer module, e.g. ("_FirstOutputs",)
    or ("RuntimeLossDPOTrainer", "_prepare_dataset"), indented as it is there. Read from the
    file, not imported: importing it loads torch and TRL."""
    source = Path(importlib.util.find_spec(TRAINER_MODULE).origin).read_text(encoding="utf-8")
    node: ast.AST = ast.parse(source)
    for name in path:
        node = next(child for child in node.body
                    if isinstance(child, ast.ClassDef | ast.FunctionDef) and child.name == name)
    return ast.get_source_segment(source, node, padded=True)


def _literal(data: dict) -> str:
    items = "".join(f"    {key!r}: {value!r},\n" for key, value in data.items())
    return "{\n" + items + "}"


TRAINER_TEMPLATE = '''"""A TRL DPOTrainer that trains under {name} (loss.py).

Exported by selfdisco from {run}, candidate {id}.

{equivalence}

TRL 1.16 computes the DPO loss inline in the private DPOTrainer._compute_loss. This subclass lets
TRL run it unchanged (every metric TRL logs stays TRL's), keeps the policy's log-probs from its
forward pass, and returns the mean of loss.py's per-pair losses instead. The override touches
private code: use trl==1.16.0. selfdisco's own trainer does the same and is tested against TRL's
"sigmoid" and "discopop" losses; _FirstOutputs and _prepare_dataset (the prompt cut) are its code,
copied from selfdisco/train/trainer.py when this file was exported.

    from peft import LoraConfig
    from trainer import LORA_CONFIG, ExportedLossDPOTrainer, dpo_config

    trainer = ExportedLossDPOTrainer(model, args=dpo_config("out"), train_dataset=pairs,
                                     processing_class=tokenizer,
                                     peft_config=LoraConfig(**LORA_CONFIG))
    trainer.train()
"""

from __future__ import annotations

import torch
from trl import DPOConfig, DPOTrainer

from loss import {entry}

TRL_LOSS_TYPE = "{trl_loss_type}"  # a built-in loss_type that trains the same; "" for none
# The policy the recipe trained (a LoRA adapter on it).
MODEL = "{model}"
# The recipe's training settings (recipe.toml [train]) as DPOConfig arguments.
DPO_ARGS = {dpo_args}
LORA_CONFIG = {lora}
MAX_PROMPT_LENGTH = {max_prompt_length}  # prompts keep their last this many tokens (None: all)


def dpo_config(output_dir: str, **changes) -> DPOConfig:
    """The recipe's DPOConfig; `changes` replace any of its arguments."""
    return DPOConfig(output_dir=output_dir, **{{**DPO_ARGS, **changes}})


{first_outputs}


class ExportedLossDPOTrainer(DPOTrainer):
    """A DPOTrainer whose loss is {entry}(...).mean() from loss.py."""

    def __init__(self, *args, max_prompt_length=MAX_PROMPT_LENGTH, **kwargs):
        self.max_prompt_length = max_prompt_length
        super().__init__(*args, **kwargs)
        self.precompute_ref_logps = True  # _compute_loss puts reference log-probs in the batch

{prepare_dataset}

    def _compute_loss(self, model, inputs, return_outputs):
        if "ref_chosen_logps" not in inputs:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.model, inputs)
            inputs = {{**inputs, "ref_chosen_logps": ref_chosen,
                      "ref_rejected_logps": ref_rejected}}
        recorder = _FirstOutputs(model)
        result = super()._compute_loss(recorder, inputs, return_outputs)
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = recorder.outputs.log_probs[:, -seq_len:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        loss = {entry}(chosen, rejected, ref_chosen, ref_rejected, self.beta).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * recorder.outputs.aux_loss
        return (loss, result[1]) if return_outputs else loss
'''

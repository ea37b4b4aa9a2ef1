"""A real vLLM server on CPU with the smoke model: sampling, structured outputs, LoRA, crashes."""

from __future__ import annotations

import psutil
import pytest

from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMError
from selfdisco.llm.protocol import parse_json_answer
from selfdisco.llm.replay import ReplayClient

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Write a short movie review."}]
PROMPT = "The movie was"
PROPOSAL_SCHEMA = {
    "type": "object",
    "properties": {
        "thought": {"type": "string", "maxLength": 40},
        "name": {"type": "string", "maxLength": 20},
        "code": {"type": "string", "maxLength": 40},
    },
    "required": ["thought", "name", "code"],
    "additionalProperties": False,
}


def test_server_is_healthy_and_serves_its_model(vllm_smoke):
    assert vllm_smoke.ensure_healthy() is False  # healthy: nothing to restart
    assert vllm_smoke.client().list_models()[0] == "smoke-llama"


def test_n_seeded_samples(vllm_smoke):
    client = vllm_smoke.client()
    first = client.chat(MESSAGES, n=4, seed=11, max_tokens=16, temperature=1.0, logprobs=True)
    assert len(first) == 4
    assert len({tuple(c.token_ids) for c in first}) == 4  # four different samples
    for completion in first:
        assert len(completion.token_logprobs) == len(completion.token_ids) > 0
        assert all(lp <= 0 for lp in completion.token_logprobs)
    again = client.chat(MESSAGES, n=4, seed=11, max_tokens=16, temperature=1.0, logprobs=True)
    assert [c.token_ids for c in again] == [c.token_ids for c in first]


def test_json_schema_answers_parse(vllm_smoke):
    client = vllm_smoke.client()
    answers = client.chat(MESSAGES, n=3, seed=0, max_tokens=1000, json_schema=PROPOSAL_SCHEMA)
    assert len(answers) == 3
    for answer in answers:
        assert answer.finish_reason == "stop", answer.text
        assert answer.text.startswith('{"thought":"')  # compact: no whitespace between tokens
        proposal = parse_json_answer(answer.text)
        assert set(proposal) == {"thought", "name", "code"}
        assert all(isinstance(value, str) for value in proposal.values())


def test_choice_constraint(vllm_smoke):
    answers = vllm_smoke.client().chat(MESSAGES, n=6, seed=2, choices=["A", "B", "tie"])
    assert len(answers) == 6
    assert {a.text for a in answers} <= {"A", "B", "tie"}


def test_stop_string_ends_the_answer(vllm_smoke):
    client = vllm_smoke.client()
    (free,) = client.complete(PROMPT, temperature=0, max_tokens=12)
    stop = free.text.strip()[:2]
    assert len(stop) == 2, free.text  # an empty stop string would be found in any text
    (stopped,) = client.complete(PROMPT, temperature=0, max_tokens=12, stop=stop)
    assert stopped.finish_reason == "stop" and stop not in stopped.text
    assert free.text.startswith(stopped.text)


def peft_prompt_logprobs(token_ids: list[int], adapter=None) -> list[float]:
    """log p(token_i | tokens before it) from transformers (with the adapter, if given)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from selfdisco.llm.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smoke-llama"),
                                                 dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        logps = model(ids).logits.log_softmax(-1)
    return [logps[0, i, token_ids[i + 1]].item() for i in range(len(token_ids) - 1)]


def test_lora_adapter_loaded_at_run_time(vllm_smoke, smoke_lora_adapter):
    client = vllm_smoke.client()
    client.load_adapter("test-lora", smoke_lora_adapter)
    try:
        assert "test-lora" in client.list_models()
        # The random smoke model's next-token distributions are nearly flat, so at temperature 1
        # the seed's noise decides almost every token; at 0.2 the weights decide.
        base = client.chat(MESSAGES, seed=3, max_tokens=16, temperature=0.2)[0]
        tuned = client.chat(MESSAGES, seed=3, max_tokens=16, temperature=0.2, model="test-lora")[0]
        assert tuned.token_ids != base.token_ids  # same seed, different weights
        # The adapter is applied as PEFT applies it: prompt log-probs agree with transformers.
        (scored,) = client.complete(PROMPT + " great and the", max_tokens=1, temperature=0,
                                    prompt_logprobs=True, model="test-lora")
        ids = scored.prompt_token_ids
        assert scored.prompt_logprobs[1:] == pytest.approx(
            peft_prompt_logprobs(ids, smoke_lora_adapter), abs=1e-2)
        (plain,) = client.complete(PROMPT + " great and the", max_tokens=1, temperature=0,
                                   prompt_logprobs=True)
        assert plain.prompt_logprobs[1:] == pytest.approx(peft_prompt_logprobs(ids), abs=1e-2)
        assert plain.prompt_logprobs[1:] != pytest.approx(scored.prompt_logprobs[1:], abs=1e-2)
    finally:
        client.unload_adapter("test-lora")
    assert "test-lora" not in client.list_models()
    with pytest.raises(LLMError, match="HTTP 404"):
        client.chat(MESSAGES, max_tokens=4, model="test-lora")


def test_recorded_answers_replay_in_order(vllm_smoke, tmp_path):
    live = vllm_smoke.client(recorder=Recorder(tmp_path / "llm"))
    asked = [
        lambda c: c.chat(MESSAGES, n=2, seed=4, max_tokens=8),
        lambda c: c.chat(MESSAGES, n=2, seed=None, max_tokens=8),  # unseeded: differs each time
        lambda c: c.chat(MESSAGES, n=2, seed=None, max_tokens=8),
        lambda c: c.complete(PROMPT, max_tokens=4, logprobs=True, prompt_logprobs=True),
    ]
    recorded = [ask(live) for ask in asked]
    assert recorded[1] != recorded[2]
    replay = ReplayClient(tmp_path)
    assert [ask(replay) for ask in asked] == recorded


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it ended between the two questions
        return False


def test_a_crash_is_noticed_and_recovered(vllm_smoke, smoke_lora_adapter):
    """Kill the vLLM API server mid-run: the next request restarts it, adapters included."""
    client = vllm_smoke.client()
    client.load_adapter("crash-lora", smoke_lora_adapter)
    before = client.complete(PROMPT, temperature=0, max_tokens=8, model="crash-lora")
    old_processes = vllm_smoke.processes()
    assert old_processes  # else "none of them still runs" below would hold trivially
    restarts = vllm_smoke.restarts
    vllm_smoke.api_process().kill()
    after = client.complete(PROMPT, temperature=0, max_tokens=8, model="crash-lora")
    assert vllm_smoke.restarts == restarts + 1
    assert [c.token_ids for c in after] == [c.token_ids for c in before]
    alive = [p for p in old_processes if _alive(p)]
    assert not alive, f"processes of the crashed server still running: {alive}"
    client.unload_adapter("crash-lora")


def test_loading_a_name_again_serves_the_new_files(vllm_smoke, smoke_lora_adapter, tmp_path):
    """A candidate re-trained after a resume reuses its adapter's name."""
    from conftest import make_random_lora_adapter

    from selfdisco.llm.models import resolve_model

    other = make_random_lora_adapter(resolve_model("smoke-llama"), tmp_path / "other", seed=7)
    client = vllm_smoke.client()
    client.load_adapter("again-lora", smoke_lora_adapter)
    try:
        first = client.chat(MESSAGES, seed=3, max_tokens=16, temperature=0.2,
                            model="again-lora")[0]
        client.load_adapter("again-lora", other)
        second = client.chat(MESSAGES, seed=3, max_tokens=16, temperature=0.2,
                             model="again-lora")[0]
        assert second.token_ids != first.token_ids
        assert client.list_models().count("again-lora") == 1
    finally:
        client.unload_adapter("again-lora")

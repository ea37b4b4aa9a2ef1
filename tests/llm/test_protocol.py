"""Logical requests, their keys, vLLM request bodies and response parsing (no server)."""

from __future__ import annotations

import pytest

from selfdisco.llm.protocol import (
    CHAT,
    COMPLETE,
    Completion,
    build_request,
    describe_request,
    parse_response,
    request_key,
    vllm_body,
)

MESSAGES = [{"role": "user", "content": "Propose a loss."}]


def test_request_key_is_stable_and_order_independent():
    first = build_request(CHAT, messages=MESSAGES, n=8, seed=3)
    second = build_request(CHAT, messages=[dict(MESSAGES[0])], seed=3, n=8)
    assert request_key(first) == request_key(second)
    assert request_key(dict(reversed(list(first.items())))) == request_key(first)


@pytest.mark.parametrize("change", [
    {"seed": 4}, {"n": 7}, {"temperature": 0.5}, {"top_p": 0.9}, {"max_tokens": 10},
    {"stop": ["\n"]}, {"model": "adapter-1"}, {"logprobs": True}, {"choices": ["a", "b"]},
    {"json_schema": {"type": "object"}}, {"messages": [{"role": "user", "content": "other"}]},
    {"grammar": 'start: "yes"'},
])
def test_request_key_changes_with_every_option(change):
    base = dict(messages=MESSAGES, n=8, seed=3)
    assert request_key(build_request(CHAT, **base)) != request_key(
        build_request(CHAT, **{**base, **change}))


def test_chat_and_complete_keys_differ():
    chat = build_request(CHAT, messages=[{"role": "user", "content": "hi"}])
    complete = build_request(COMPLETE, prompt="hi")
    assert request_key(chat) != request_key(complete)


@pytest.mark.parametrize("endpoint, kwargs, message", [
    (CHAT, {"messages": []}, "non-empty list"),
    (CHAT, {"messages": ["hi"]}, "non-empty list"),
    (CHAT, {"messages": MESSAGES, "prompt_logprobs": True}, "only available for complete"),
    (COMPLETE, {"prompt": ""}, "non-empty prompt"),
    (CHAT, {"messages": MESSAGES, "n": 0}, "n must be"),
    (CHAT, {"messages": MESSAGES, "temperature": -1}, "temperature"),
    (CHAT, {"messages": MESSAGES, "top_p": 0}, "top_p"),
    (CHAT, {"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
    (CHAT, {"messages": MESSAGES, "choices": []}, "choices"),
    (CHAT, {"messages": MESSAGES, "choices": ["a"], "json_schema": {}}, "at most one"),
    (CHAT, {"messages": MESSAGES, "grammar": 'start: "a"', "json_schema": {}}, "at most one"),
    (CHAT, {"messages": MESSAGES, "grammar": " "}, "non-empty Lark grammar"),
    ("embed", {"prompt": "x"}, "unknown endpoint"),
])
def test_bad_options_are_refused(endpoint, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_request(endpoint, **kwargs)


def test_chat_body_uses_structured_outputs_and_default_model():
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    request = build_request(CHAT, messages=MESSAGES, n=8, seed=1, stop="END", json_schema=schema,
                            max_tokens=64, logprobs=True)
    body = vllm_body(request, "base-model")
    assert body["model"] == "base-model"
    assert body["structured_outputs"]["json"] == schema
    assert body["stop"] == ["END"]
    assert body["max_completion_tokens"] == 64 and body["n"] == 8 and body["seed"] == 1
    assert body["logprobs"] is True and body["return_token_ids"] is True
    choice_body = vllm_body(build_request(CHAT, messages=MESSAGES, choices=["A", "B"],
                                          model="adapter"), "base-model")
    assert choice_body["structured_outputs"] == {"choice": ["A", "B"]}
    assert choice_body["model"] == "adapter"
    assert "seed" not in choice_body and "logprobs" not in choice_body


def test_grammar_goes_to_structured_outputs_and_only_then_into_the_request():
    grammar = 'start: "yes" | "no"'
    request = build_request(CHAT, messages=MESSAGES, grammar=grammar)
    assert vllm_body(request, "base-model")["structured_outputs"] == {"grammar": grammar}
    plain = build_request(CHAT, messages=MESSAGES)
    assert "grammar" not in plain  # keys recorded before the option existed still match
    assert "structured_outputs" not in vllm_body(plain, "base-model")


def test_completion_body_asks_for_prompt_logprobs():
    body = vllm_body(build_request(COMPLETE, prompt="The movie", prompt_logprobs=True,
                                   logprobs=True, echo=True), "m")
    assert body["prompt"] == "The movie" and body["max_tokens"] == 256
    assert body["prompt_logprobs"] == 0 and body["logprobs"] == 0 and body["echo"] is True


# Shapes as vLLM 0.32 returns them (taken from real responses of the smoke model).
CHAT_RESPONSE = {
    "prompt_token_ids": [1, 87, 2],
    "choices": [
        {"index": 1, "message": {"role": "assistant", "content": "second"},
         "finish_reason": "length", "token_ids": [7, 8],
         "logprobs": {"content": [{"token": "a", "logprob": -1.5}, {"token": "b",
                                                                     "logprob": -0.5}]}},
        {"index": 0, "message": {"role": "assistant", "content": "first"},
         "finish_reason": "stop", "token_ids": [5, 6],
         "logprobs": {"content": [{"token": "c", "logprob": -2.0}, {"token": "d",
                                                                     "logprob": -0.25}]}},
    ],
}
COMPLETION_RESPONSE = {
    "choices": [{
        "index": 0, "text": " was was", "finish_reason": "length", "token_ids": [379, 379],
        "logprobs": {"token_logprobs": [-5.35, -5.28], "tokens": [" was", " was"]},
        "prompt_token_ids": [268, 463, 379],
        "prompt_logprobs": [None, {"463": {"logprob": -5.97, "rank": 26}},
                            {"379": {"logprob": -6.34, "rank": 365},
                             "12": {"logprob": -1.0, "rank": 1}}],
    }],
}


def test_parse_chat_response_in_index_order_with_logprobs():
    request = build_request(CHAT, messages=MESSAGES, n=2, logprobs=True)
    completions = parse_response(request, CHAT_RESPONSE)
    assert [c.text for c in completions] == ["first", "second"]
    assert completions[0].token_logprobs == [-2.0, -0.25]
    assert completions[1].token_ids == [7, 8]
    assert completions[0].prompt_token_ids == [1, 87, 2]
    assert completions[0].prompt_logprobs is None


def test_parse_completion_response_keeps_the_actual_prompt_tokens_logprobs():
    request = build_request(COMPLETE, prompt="The movie was", logprobs=True,
                            prompt_logprobs=True)
    (completion,) = parse_response(request, COMPLETION_RESPONSE)
    assert completion.prompt_logprobs == [None, -5.97, -6.34]
    assert completion.token_logprobs == [-5.35, -5.28]
    assert completion.finish_reason == "length"


def test_logprobs_left_out_unless_asked():
    request = build_request(COMPLETE, prompt="The movie was")
    (completion,) = parse_response(request, COMPLETION_RESPONSE)
    assert completion.token_logprobs is None and completion.prompt_logprobs is None


def test_completion_round_trips_through_a_dict():
    completion = Completion("x", "stop", [1], [-0.5], [2, 3], [None, -1.0])
    assert Completion.from_dict(completion.to_dict()) == completion


def test_describe_request_names_what_was_asked():
    text = describe_request(build_request(CHAT, messages=MESSAGES, n=8, seed=3))
    assert "Propose a loss." in text and "n=8" in text and "seed=3" in text

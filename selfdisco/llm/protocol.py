"""What a client asks and what it gets back, independent of how the answer is produced.

A request is a plain dict (the "logical request": endpoint, prompt or messages, sampling options,
adapter). The live client turns it into a request body for its server's structured-output mode
(STRUCTURED_MODES); the recorder stores it beside the answer; replay looks answers up by its key.
Keeping one builder for all three keeps them in step.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

CHAT = "chat"
COMPLETE = "complete"

# How a server is asked to keep to an answer format. Whatever the mode, callers re-check answers.
STRUCTURED_MODES = {
    "vllm": "vLLM's structured_outputs: a JSON schema, a list of choices or a Lark grammar",
    "openai": "the OpenAI response_format JSON schema only (llama.cpp, SGLang, Ollama, TGI, "
              "hosted endpoints); choices and grammars are not sent",
    "none": "nothing is sent: the answer is free text",
}


@dataclass(frozen=True)
class Completion:
    """One sampled answer.

    token_logprobs holds the log-probability of each sampled token (when logprobs was asked);
    prompt_logprobs holds one value per prompt token, None for the first (when asked).
    """

    text: str
    finish_reason: str | None
    token_ids: list[int] | None = None
    token_logprobs: list[float] | None = None
    prompt_token_ids: list[int] | None = None
    prompt_logprobs: list[float | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Completion:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


def build_request(
    endpoint: str,
    *,
    messages: list[dict[str, str]] | None = None,
    prompt: str | None = None,
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_tokens: int = 256,
    seed: int | None = None,
    stop: str | list[str] | None = None,
    json_schema: dict | None = None,
    choices: list[str] | None = None,
    model: str | None = None,
    logprobs: bool = False,
    prompt_logprobs: bool = False,
    echo: bool = False,
    grammar: str | None = None,
) -> dict[str, Any]:
    """Check the options and return the logical request (model None means the base model).

    grammar is a Lark grammar for the whole answer; a request without one has no "grammar"
    key, so the keys of requests recorded before the option existed still match."""
    if endpoint == CHAT:
        if not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError("chat needs a non-empty list of {'role', 'content'} messages")
        if prompt_logprobs or echo:
            raise ValueError("prompt_logprobs and echo are only available for complete()")
    elif endpoint == COMPLETE:
        if not isinstance(prompt, str) or not prompt:
            raise ValueError("complete needs a non-empty prompt string")
    else:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if sum(option is not None for option in (json_schema, choices, grammar)) > 1:
        raise ValueError("give at most one of json_schema, choices and grammar")
    if grammar is not None and (not isinstance(grammar, str) or not grammar.strip()):
        raise ValueError("grammar must be a non-empty Lark grammar string")
    if choices is not None and (not choices or not all(isinstance(c, str) for c in choices)):
        raise ValueError("choices must be a non-empty list of strings")
    if isinstance(stop, str):
        stop = [stop]
    request: dict[str, Any] = {
        "endpoint": endpoint,
        "model": model,
        "n": n,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "max_tokens": max_tokens,
        "seed": seed,
        "stop": list(stop) if stop else None,
        "json_schema": json_schema,
        "choices": list(choices) if choices is not None else None,
        "logprobs": bool(logprobs),
    }
    if grammar is not None:
        request["grammar"] = grammar
    if endpoint == CHAT:
        request["messages"] = [dict(m) for m in messages]
    else:
        request["prompt"] = prompt
        request["prompt_logprobs"] = bool(prompt_logprobs)
        request["echo"] = bool(echo)
    return request


def request_key(request: dict[str, Any]) -> str:
    """A stable key for a logical request: the hash of its canonical JSON."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def describe_request(request: dict[str, Any], width: int = 80) -> str:
    """One line naming what was asked, for error messages."""
    if request.get("endpoint") == CHAT:
        last = request["messages"][-1].get("content", "")
        text = f"chat, last message {_clip(str(last), width)!r}"
    else:
        text = f"complete, prompt {_clip(str(request.get('prompt', '')), width)!r}"
    options = ", ".join(
        f"{name}={request[name]}"
        for name in ("model", "n", "temperature", "seed", "max_tokens")
        if request.get(name) is not None
    )
    return f"{text} ({options})"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def vllm_body(request: dict[str, Any], default_model: str) -> dict[str, Any]:
    """The body of the vLLM OpenAI-compatible request for a logical request."""
    body: dict[str, Any] = {
        "model": request["model"] or default_model,
        "n": request["n"],
        "temperature": request["temperature"],
        "top_p": request["top_p"],
        "return_token_ids": True,
    }
    for name in ("seed", "stop"):
        if request[name] is not None:
            body[name] = request[name]
    if request["json_schema"] is not None:
        body["structured_outputs"] = {"json": request["json_schema"]}
    elif request["choices"] is not None:
        body["structured_outputs"] = {"choice": request["choices"]}
    elif request.get("grammar") is not None:
        body["structured_outputs"] = {"grammar": request["grammar"]}
    if request["endpoint"] == CHAT:
        body["messages"] = request["messages"]
        body["max_completion_tokens"] = request["max_tokens"]
        if request["logprobs"]:
            body["logprobs"] = True
            body["top_logprobs"] = 0
    else:
        body["prompt"] = request["prompt"]
        body["max_tokens"] = request["max_tokens"]
        body["echo"] = request["echo"]
        if request["logprobs"]:
            body["logprobs"] = 0
        if request["prompt_logprobs"]:
            body["prompt_logprobs"] = 0
    return body


def openai_body(request: dict[str, Any], default_model: str, constrain: bool) -> dict[str, Any]:
    """The body of a plain OpenAI request (no vLLM extensions) for a logical request.

    constrain: send a JSON schema as response_format (mode "openai"); choices and grammars have
    no OpenAI form and go unconstrained.
    """
    if request.get("prompt_logprobs"):
        raise ValueError("prompt log-probabilities need a vLLM server (structured mode vllm)")
    body: dict[str, Any] = {
        "model": request["model"] or default_model,
        "n": request["n"],
        "temperature": request["temperature"],
        "top_p": request["top_p"],
        "max_tokens": request["max_tokens"],
    }
    for name in ("seed", "stop"):
        if request[name] is not None:
            body[name] = request[name]
    if constrain and request["json_schema"] is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer",
                                                   "schema": request["json_schema"]}}
    if request["endpoint"] == CHAT:
        body["messages"] = request["messages"]
        if request["logprobs"]:
            body["logprobs"] = True
    else:
        body["prompt"] = request["prompt"]
        if request["echo"]:
            body["echo"] = True
        if request["logprobs"]:
            body["logprobs"] = 1
    return body


def parse_response(request: dict[str, Any], data: dict[str, Any]) -> list[Completion]:
    """Completions from a vLLM response, in choice order."""
    prompt_ids = data.get("prompt_token_ids")
    completions = []
    for choice in sorted(data["choices"], key=lambda c: c.get("index", 0)):
        if request["endpoint"] == CHAT:
            text = choice["message"].get("content") or ""
            content = (choice.get("logprobs") or {}).get("content")
            token_logprobs = [item["logprob"] for item in content] if content else None
        else:
            text = choice["text"]
            token_logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        ids = choice.get("prompt_token_ids") or prompt_ids
        prompt_logprobs = None
        if request.get("prompt_logprobs"):
            prompt_logprobs = _prompt_logprobs(ids, choice.get("prompt_logprobs"))
        completions.append(Completion(
            text=text,
            finish_reason=choice.get("finish_reason"),
            token_ids=choice.get("token_ids"),
            token_logprobs=token_logprobs if request["logprobs"] else None,
            prompt_token_ids=ids,
            prompt_logprobs=prompt_logprobs,
        ))
    return completions


def parse_json_answer(text: str) -> Any:
    """Decode a JSON-schema answer. vLLM's grammar lets raw control characters (a tab, a
    newline) into strings, which strict JSON forbids, so they are accepted here."""
    return json.loads(text, strict=False)


def _prompt_logprobs(ids: list[int] | None, entries: list | None) -> list[float | None] | None:
    """vLLM gives, per prompt position, a dict keyed by token id; keep the actual token's."""
    if ids is None or entries is None:
        return None
    values: list[float | None] = []
    for token_id, entry in zip(ids, entries, strict=True):
        values.append(None if entry is None else entry[str(token_id)]["logprob"])
    return values

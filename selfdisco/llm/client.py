"""A client for OpenAI-compatible APIs (vLLM's and others), over httpx, recording every exchange.

`LLMClient` talks to a live server; `selfdisco.llm.replay.ReplayClient` answers the same calls
from a recorded run. Both share `BaseClient.chat` / `complete`, so their signatures cannot drift.
The client is safe to share between threads. An API key, read from an environment variable,
travels only in the HTTP headers: the recorder stores the logical request, never the key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from selfdisco.errors import UserError
from selfdisco.llm.cache import Recorder
from selfdisco.llm.protocol import (
    CHAT,
    COMPLETE,
    STRUCTURED_MODES,
    Completion,
    build_request,
    openai_body,
    parse_response,
    vllm_body,
)


class LLMError(UserError):
    """A request that the server refused or that could not reach it."""


class LLMUnavailable(LLMError):
    """No answer at all after the retries: the server is down or unreachable."""


class LLMAuthError(LLMUnavailable):
    """The server refused the API key (or its variable is unset): no request can succeed."""


def read_api_key(env_name: str, url: str) -> str:
    """The API key in the environment variable `env_name` for the server at `url`.

    Raises:
        LLMAuthError: naming the variable and the URL when it is unset or empty.
    """
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise LLMAuthError(f"the API key for the LLM server at {url} is read from the "
                           f"environment variable {env_name}, which is not set: "
                           f"export {env_name}=<your key>, then try again")
    return key


class BaseClient:
    """chat() and complete() for any client: build the logical request, answer, record."""

    model: str
    recorder: Recorder | None = None

    def chat(self, messages: list[dict[str, str]], *, n: int = 1, temperature: float = 1.0,
             top_p: float = 1.0, max_tokens: int = 256, seed: int | None = None,
             stop: str | list[str] | None = None, json_schema: dict | None = None,
             choices: list[str] | None = None, model: str | None = None,
             logprobs: bool = False, grammar: str | None = None) -> list[Completion]:
        """Chat completion (the model's chat template applies); returns n completions.

        Args:
            json_schema: the answer must conform to this JSON schema (vLLM structured outputs).
            choices: the answer must be exactly one of these strings.
            grammar: the answer must be a sentence of this Lark grammar (vLLM's guidance
                back-end).
            model: a LoRA adapter's name to sample from it; None for the base model.
            logprobs: also return the log-probability of each sampled token.
        """
        request = build_request(
            CHAT, messages=messages, n=n, temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, seed=seed, stop=stop, json_schema=json_schema,
            choices=choices, model=model, logprobs=logprobs, grammar=grammar)
        return self._answer_and_record(request)

    def complete(self, prompt: str, *, n: int = 1, temperature: float = 1.0, top_p: float = 1.0,
                 max_tokens: int = 256, seed: int | None = None,
                 stop: str | list[str] | None = None, json_schema: dict | None = None,
                 choices: list[str] | None = None, model: str | None = None,
                 logprobs: bool = False, prompt_logprobs: bool = False,
                 echo: bool = False, grammar: str | None = None) -> list[Completion]:
        """Raw text completion (no chat template); options as for chat().

        Args:
            prompt_logprobs: also return the log-probability of each prompt token.
            echo: the returned text starts with the prompt.
        """
        request = build_request(
            COMPLETE, prompt=prompt, n=n, temperature=temperature, top_p=top_p,
            max_tokens=max_tokens, seed=seed, stop=stop, json_schema=json_schema,
            choices=choices, model=model, logprobs=logprobs, prompt_logprobs=prompt_logprobs,
            echo=echo, grammar=grammar)
        return self._answer_and_record(request)

    def _answer_and_record(self, request: dict[str, Any]) -> list[Completion]:
        started = time.monotonic()
        completions = self._answer(request)
        if self.recorder is not None:
            self.recorder.record(request, completions, elapsed_s=time.monotonic() - started)
        return completions

    def _answer(self, request: dict[str, Any]) -> list[Completion]:
        raise NotImplementedError


class LLMClient(BaseClient):
    """A live vLLM server.

    Args:
        base_url: the API root, e.g. http://127.0.0.1:8000/v1.
        model: the served base model's name (requests with model=None go to it).
        recorder: where exchanges are written (the run's replay cache); None records nothing.
        timeout_s: per-request timeout.
        retries: extra tries after a connection error, a timeout or a 5xx answer.
        recover: called before each retry: a managed server's health check, which restarts it
            after a crash (VLLMServer.client passes it); None for a server that is not ours.
        adapters: kept up to date with the adapters loaded here (name -> path), so that a
            restarted server serves them again (VLLMServer.client passes its own).
        api_key_env: the name of the environment variable holding the server's API key, sent
            as "Authorization: Bearer"; empty sends none.
        structured: how answer formats are asked for, a key of protocol.STRUCTURED_MODES:
            "vllm" (structured_outputs), "openai" (response_format) or "none".
    """

    def __init__(self, base_url: str, model: str, *, recorder: Recorder | None = None,
                 timeout_s: float = 600.0, retries: int = 3, backoff_s: float = 1.0,
                 recover: Callable[[], object] | None = None,
                 adapters: dict[str, str] | None = None, api_key_env: str = "",
                 structured: str = "vllm") -> None:
        if structured not in STRUCTURED_MODES:
            raise LLMError(f"structured-output mode {structured!r} is not known; choose one of "
                           f"{', '.join(STRUCTURED_MODES)}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.recorder = recorder
        self.retries = retries
        self.backoff_s = backoff_s
        self.recover = recover
        self.adapters = adapters if adapters is not None else {}
        self.api_key_env = api_key_env
        self.structured = structured
        headers = ({"Authorization": f"Bearer {read_api_key(api_key_env, self.base_url)}"}
                   if api_key_env else {})
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0),
                                  headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_models(self) -> list[str]:
        """Names the server answers to: the base model first, then loaded adapters."""
        data = self._send("GET", "/models")
        return [item["id"] for item in data.get("data", [])]

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a PEFT LoRA adapter at run time; sample from it with model=name."""
        path = str(Path(path).resolve())
        if not (Path(path) / "adapter_config.json").exists():
            raise LLMError(f"{path} is not a LoRA adapter directory (no adapter_config.json)")
        try:
            self._send("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path})
        except LLMError as err:
            if "already" not in str(err).lower():
                raise
            # Same name again (a candidate re-trained after a resume): serve the new files.
            self._send("POST", "/unload_lora_adapter", {"lora_name": name})
            self._send("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path})
        self.adapters[name] = path
        if self.recorder is not None:
            self.recorder.record_adapter("load_adapter", name, path)

    def unload_adapter(self, name: str) -> None:
        """Stop serving an adapter; one the server does not have (a restarted server, HTTP 404)
        is already unloaded."""
        try:
            self._send("POST", "/unload_lora_adapter", {"lora_name": name})
        except LLMError as err:
            if isinstance(err, LLMUnavailable) or "(HTTP 404)" not in str(err):
                raise
        self.adapters.pop(name, None)
        if self.recorder is not None:
            self.recorder.record_adapter("unload_adapter", name)

    def _answer(self, request: dict[str, Any]) -> list[Completion]:
        """The n completions of a request; a server that returns fewer (some ignore n) is asked
        again for the rest, with the seed moved on so that the answers differ."""
        path = "/chat/completions" if request["endpoint"] == CHAT else "/completions"
        completions: list[Completion] = []
        while len(completions) < request["n"]:
            rest = {**request, "n": request["n"] - len(completions)}
            if request["seed"] is not None:
                rest["seed"] = request["seed"] + len(completions)
            try:
                got = parse_response(rest, self._send("POST", path, self._body(rest)))
            except (KeyError, TypeError, ValueError) as err:
                raise LLMError(f"unexpected answer from {self.base_url}{path}: {err!r}") from err
            if not got:
                raise LLMError(f"the LLM server at {self.base_url}{path} returned no choices")
            completions += got
        return completions[:request["n"]]

    def _body(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.structured == "vllm":
            return vllm_body(request, self.model)
        try:
            return openai_body(request, self.model, constrain=self.structured == "openai")
        except ValueError as err:
            raise LLMError(f"{self.base_url}: {err}") from None

    def _send(self, method: str, path: str, body: dict | None = None) -> Any:
        """One API call with bounded retries; returns the decoded JSON (or text) answer."""
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 30.0))
                if self.recover is not None:
                    self.recover()
            url = self.base_url + path
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TransportError as err:
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.status_code >= 500:
                last_error = f"HTTP {response.status_code}: {_error_text(response)}"
                continue
            if response.status_code in (401, 403):
                raise LLMAuthError(self._auth_refusal(response))
            if response.status_code >= 400:
                hint = ("; check the URL: it is the API root, e.g. http://HOST:PORT/v1"
                        if response.status_code == 404 else "")
                raise LLMError(f"the LLM server refused {method} {url} "
                               f"(HTTP {response.status_code}): {_error_text(response)}{hint}")
            try:
                return response.json()
            except ValueError:
                return response.text
        raise LLMUnavailable(f"no answer from the LLM server at {self.base_url} after "
                       f"{self.retries + 1} tries ({method} {path}): {last_error}. "
                       "Check that the server is running and the URL is right.")

    def _auth_refusal(self, response: httpx.Response) -> str:
        refused = (f"the LLM server at {self.base_url} refused the request (HTTP "
                   f"{response.status_code}: {_error_text(response)})")
        if self.api_key_env:
            return (f"{refused}: the API key in the environment variable {self.api_key_env} "
                    "is wrong or not allowed there; export the right key and try again")
        return (f"{refused}: it needs an API key; put the key in an environment variable and "
                "name that variable in the server's api_key_env setting "
                "(server.proposer_api_key_env, or --judge-api-key-env for selfdisco eval)")


def _error_text(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500]
    error = data.get("error", data) if isinstance(data, dict) else data
    message = error.get("message") if isinstance(error, dict) else None
    return str(message or error)[:500]

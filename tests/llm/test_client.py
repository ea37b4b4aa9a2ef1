"""The HTTP client against a small stand-in server: retries and recovery, refusals, unreachable
servers, the adapters it keeps track of."""

from __future__ import annotations

import subprocess
import sys

import pytest
from openai_server import OpenAIServer

from selfdisco.llm.backend import free_port
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMClient, LLMError
from selfdisco.llm.replay import ReplayClient

CHAT_ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop", "token_ids": [1]}]}


@pytest.fixture
def stand_in(request):
    """Answers each request with the next (status, body) of the parameter's script."""
    with OpenAIServer(script=request.param) as server:
        yield server


@pytest.mark.parametrize("stand_in", [[(503, {"error": "busy"}), (500, {"error": "oops"}),
                                       (200, CHAT_ANSWER)]], indirect=True)
def test_5xx_answers_are_retried_then_recorded(stand_in, tmp_path):
    client = LLMClient(stand_in.url, "base", retries=2, backoff_s=0.01,
                       recorder=Recorder(tmp_path / "llm"))
    (completion,) = client.chat([{"role": "user", "content": "hi"}], seed=5)
    assert completion.text == "ok"
    assert len(stand_in.bodies()) == 3
    assert stand_in.bodies()[0]["model"] == "base" and stand_in.bodies()[0]["seed"] == 5
    assert ReplayClient(tmp_path).chat([{"role": "user", "content": "hi"}], seed=5) == [
        completion]


@pytest.mark.parametrize("stand_in", [[(503, {"error": "busy"})] * 2], indirect=True)
def test_retries_are_bounded(stand_in):
    client = LLMClient(stand_in.url, "base", retries=1, backoff_s=0.01)
    with pytest.raises(LLMError, match=r"after 2 tries.*HTTP 503: busy"):
        client.chat([{"role": "user", "content": "hi"}])
    assert len(stand_in.bodies()) == 2


@pytest.mark.parametrize("stand_in", [[(400, {"error": {"message": "bad schema"}})]],
                         indirect=True)
def test_a_refused_request_is_not_retried(stand_in):
    client = LLMClient(stand_in.url, "base", retries=3, backoff_s=0.01)
    with pytest.raises(LLMError, match=r"HTTP 400\): bad schema"):
        client.chat([{"role": "user", "content": "hi"}], json_schema={"type": "object"})
    assert len(stand_in.bodies()) == 1


def test_unreachable_server_is_a_clear_error():
    client = LLMClient(f"http://127.0.0.1:{free_port()}/v1", "base", retries=1, backoff_s=0.01)
    with pytest.raises(LLMError, match=r"no answer from the LLM server at .* after 2 tries"):
        client.list_models()


def test_load_adapter_checks_the_directory(tmp_path):
    client = LLMClient(f"http://127.0.0.1:{free_port()}/v1", "base", retries=0)
    with pytest.raises(LLMError, match="not a LoRA adapter directory"):
        client.load_adapter("a", tmp_path)


@pytest.mark.parametrize("stand_in", [[(503, {"error": "down"}), (200, CHAT_ANSWER)]],
                         indirect=True)
def test_recover_is_called_before_each_retry(stand_in):
    calls = []
    client = LLMClient(stand_in.url, "base", retries=2, backoff_s=0.01,
                       recover=lambda: calls.append(len(stand_in.bodies())))
    assert client.chat([{"role": "user", "content": "hi"}])[0].text == "ok"
    assert calls == [1]  # once, after the first answer failed, before the second try


@pytest.mark.parametrize("stand_in", [[(200, {}), (200, {})]], indirect=True)
def test_loaded_adapters_are_kept_in_the_given_dict(stand_in, tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    served: dict[str, str] = {}
    client = LLMClient(stand_in.url, "base", adapters=served)
    client.load_adapter("gen1", tmp_path)
    assert served == {"gen1": str(tmp_path.resolve())}
    assert stand_in.bodies()[0] == {"lora_name": "gen1", "lora_path": str(tmp_path.resolve())}
    client.unload_adapter("gen1")
    assert served == {}


@pytest.mark.parametrize("stand_in", [[
    (404, {"message": "The lora adapter 'gen1' cannot be found."}),
    (400, {"message": "bad name"})]], indirect=True)
def test_unloading_an_adapter_the_server_lost_is_not_an_error(stand_in):
    served = {"gen1": "/adapters/gen1"}  # loaded before the server restarted without it
    client = LLMClient(stand_in.url, "base", adapters=served, retries=0)
    client.unload_adapter("gen1")
    assert served == {}
    with pytest.raises(LLMError, match=r"HTTP 400"):  # any other refusal still is
        client.unload_adapter("gen2")


def test_the_client_does_not_import_the_server():
    code = ("import sys, selfdisco.llm.client; "
            "print('selfdisco.llm.server' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr

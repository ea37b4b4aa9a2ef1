"""(integration) The "openai" structured-output mode against a real OpenAI-compatible server:
vLLM takes the plain OpenAI body (no vLLM extensions) and enforces its response_format schema."""

from __future__ import annotations

import pytest

from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMClient
from selfdisco.llm.protocol import parse_json_answer
from selfdisco.tasks.judge import Judge

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Propose a loss as JSON."}]
SCHEMA = {"type": "object",
          "properties": {"thought": {"type": "string", "maxLength": 40},
                         "name": {"type": "string", "maxLength": 20}},
          "required": ["thought", "name"], "additionalProperties": False}


def test_vllm_enforces_the_openai_response_format(vllm_smoke, tmp_path):
    client = LLMClient(vllm_smoke.base_url, vllm_smoke.model_name, structured="openai",
                       recorder=Recorder(tmp_path / "llm"))
    answers = client.chat(MESSAGES, n=2, seed=0, max_tokens=200, json_schema=SCHEMA)
    assert len(answers) == 2
    for answer in answers:
        assert answer.finish_reason == "stop", answer.text
        assert set(parse_json_answer(answer.text)) == {"thought", "name"}
    rating = Judge(client, max_tokens=64).rate("q1", ["What is 2 + 2?"], ["4"], 1)
    assert rating.score is not None, rating.reply  # the schema held the random model to 1-10

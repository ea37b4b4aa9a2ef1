"""vLLM on a GPU: sleep mode frees the GPU for training and wakes up with the same weights."""

from __future__ import annotations

import pytest

from selfdisco.llm.backend import detect_backend
from selfdisco.llm.models import resolve_model
from selfdisco.llm.server import VLLMServer

pytestmark = [pytest.mark.integration, pytest.mark.gpu]

MESSAGES = [{"role": "user", "content": "Write a short movie review."}]


def gpu_memory_used_mib() -> int:
    import subprocess

    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


@pytest.mark.skipif(detect_backend() != "cuda", reason="needs the CUDA build of vLLM and a GPU")
def test_sleep_frees_the_gpu_and_wake_up_restores_the_model(tmp_path, smoke_lora_adapter):
    server = VLLMServer(resolve_model("smoke-llama"), log_path=tmp_path / "server.log",
                        gpu_memory_utilization=0.3)
    with server:
        assert server.sleep_enabled and "--enable-sleep-mode" in server.command()
        client = server.client()
        client.load_adapter("gpu-lora", smoke_lora_adapter)
        before = client.chat(MESSAGES, temperature=0, max_tokens=16, model="gpu-lora")
        awake_mib = gpu_memory_used_mib()
        with server.asleep() as slept:
            assert slept is True
            asleep_mib = gpu_memory_used_mib()
        after = client.chat(MESSAGES, temperature=0, max_tokens=16, model="gpu-lora")
        print(f"GPU memory used: awake {awake_mib} MiB, asleep {asleep_mib} MiB")
        assert asleep_mib < awake_mib - 1000  # the KV cache (30% of the GPU) was released
        assert [c.token_ids for c in after] == [c.token_ids for c in before]
    assert not server.processes()

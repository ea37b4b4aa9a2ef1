"""LLM sources, the server's command line and guards, and `serve` argument errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from console import SELFDISCO

from selfdisco.commands.serve import parse_adapters
from selfdisco.errors import UserError
from selfdisco.llm.backend import free_port
from selfdisco.llm.cache import Recorder
from selfdisco.llm.endpoint import open_llm
from selfdisco.llm.protocol import CHAT, Completion, build_request
from selfdisco.llm.replay import ReplayClient
from selfdisco.llm.server import VLLMServer
from selfdisco.llm.topology import parse_server_url, parse_source


@pytest.mark.parametrize("spec, kind, url", [
    ("local", "local", None),
    ("http://localhost:8000/v1", "http", "http://localhost:8000/v1"),
    ("http://10.0.0.2:8000", "http", "http://10.0.0.2:8000/v1"),
    ("https://llm.example/v1/", "http", "https://llm.example/v1"),
])
def test_sources(spec, kind, url):
    parsed = parse_source(spec)
    assert parsed.kind == kind and parsed.url == url


def test_replay_source_keeps_the_run_dir():
    assert parse_source("replay:checkpoints/run-1").run_dir == Path("checkpoints/run-1")


@pytest.mark.parametrize("spec, message", [
    ("", "not understood"),
    ("gpt-4", "not understood"),
    ("ftp://host/v1", "not understood"),
    ("replay:", "needs a run directory"),
    ("http://", "has no host"),
    ("http://host:notaport/v1", "bad port"),
])
def test_bad_sources_are_clear_errors(spec, message):
    with pytest.raises(UserError, match=message) as info:
        parse_source(spec)
    assert "local" in str(info.value) or message in ("has no host", "bad port")
    assert str(info.value).startswith("--proposer")


def test_errors_name_the_option_the_value_came_from():
    with pytest.raises(UserError, match="^--judge 'judge:7' is not understood"):
        parse_source("judge:7", "--judge")
    assert parse_server_url("http://10.0.0.2:8000") == "http://10.0.0.2:8000/v1"
    with pytest.raises(UserError, match="^server.url 'local' must be a server's URL"):
        parse_server_url("local")


def test_open_replay_proposer_answers_and_records_the_new_run(tmp_path):
    request = build_request(CHAT, messages=[{"role": "user", "content": "hi"}], seed=1)
    recorded = [Completion("hello", "stop")]
    Recorder(tmp_path / "old" / "llm").record(request, recorded, elapsed_s=0.0)
    with open_llm(f"replay:{tmp_path / 'old'}", run_dir=tmp_path / "new") as endpoint:
        assert endpoint.kind == "replay" and endpoint.server is None
        assert endpoint.client.chat([{"role": "user", "content": "hi"}], seed=1) == recorded
    assert ReplayClient(tmp_path / "new").chat([{"role": "user", "content": "hi"}],
                                               seed=1) == recorded


def test_open_http_source_with_no_server_is_a_clear_error():
    with pytest.raises(UserError, match="no answer from the LLM server"):
        open_llm(f"http://127.0.0.1:{free_port()}/v1",
                 client_options={"retries": 0})


def test_open_local_llm_needs_a_model():
    with pytest.raises(UserError, match="--server local needs a model"):
        open_llm("local", option="--server")


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        VLLMServer(tmp_path / "no-model", log_path=tmp_path / "server.log")


def test_hub_ids_pass_through(tmp_path):
    server = VLLMServer("HuggingFaceTB/SmolLM2-135M-Instruct", log_path=tmp_path / "log")
    assert server.model_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert server.model_name == "SmolLM2-135M-Instruct"


def make_server(tmp_path, **options) -> VLLMServer:
    (tmp_path / "model").mkdir(exist_ok=True)
    adapter = tmp_path / "my adapter,1"
    adapter.mkdir(exist_ok=True)
    return VLLMServer(tmp_path / "model", log_path=tmp_path / "server.log", port=8123,
                      adapters={"gen1": str(adapter)}, **options)


def test_cpu_command(tmp_path):
    cmd = make_server(tmp_path, backend="cpu", kv_cache_bytes=1 << 28).command()
    assert cmd[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enforce-eager" in cmd and "--enable-sleep-mode" not in cmd
    assert cmd[cmd.index("--kv-cache-memory-bytes") + 1] == str(1 << 28)
    assert cmd[cmd.index("--generation-config") + 1] == "vllm"
    assert int(cmd[cmd.index("--max-num-batched-tokens") + 1]) >= 16384  # no chunked prefill
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"
    lora = json.loads(cmd[cmd.index("--lora-modules") + 1])
    assert lora == {"name": "gen1", "path": str(tmp_path / "my adapter,1")}
    env = make_server(tmp_path, backend="cpu").environment()
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "VLLM_SERVER_DEV_MODE" not in env


def test_structured_outputs_are_compact_unless_extra_args_choose(tmp_path):
    cmd = make_server(tmp_path, backend="cpu").command()
    config = json.loads(cmd[cmd.index("--structured-outputs-config") + 1])
    assert config == {"backend": "guidance", "disable_any_whitespace": True}
    chosen = ["--structured-outputs-config", '{"backend": "guidance"}']
    cmd = make_server(tmp_path, backend="cpu", extra_args=chosen).command()
    assert cmd.count("--structured-outputs-config") == 1 and cmd[-2:] == chosen
    assert "--structured-outputs-config" not in make_server(
        tmp_path, backend="cpu", compact_json=False).command()


def test_gpu_command_enables_sleep_mode(tmp_path):
    server = make_server(tmp_path, backend="cuda", gpu_memory_utilization=0.5)
    cmd = server.command()
    assert "--enable-sleep-mode" in cmd and "--enforce-eager" not in cmd
    assert "--kv-cache-memory-bytes" not in cmd
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.5"
    assert server.environment()["VLLM_SERVER_DEV_MODE"] == "1"


def test_sleep_is_never_called_on_cpu(tmp_path):
    server = make_server(tmp_path, backend="cpu")  # never started: any HTTP call would fail
    assert server.sleep() is False and server.wake_up() is False
    with server.asleep() as slept:
        assert slept is False


def test_ensure_healthy_before_start_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="never started"):
        make_server(tmp_path, backend="cpu").ensure_healthy()


class _NoVLLM:
    """A meta-path finder under which `vllm` cannot be imported, as in a Python without it."""

    def find_spec(self, name, path=None, target=None):
        if name == "vllm" or name.startswith("vllm."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def test_a_python_without_vllm_is_refused_before_any_process_starts(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoVLLM(), *sys.meta_path])
    server = make_server(tmp_path, backend="cpu")
    with pytest.raises(UserError, match=r"vLLM is not installed .*scripts/setup\.sh"):
        server.start()
    assert not server.running and not (tmp_path / "server.log").exists()


def test_parse_adapters(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    assert parse_adapters([f"gen1={tmp_path}"]) == {"gen1": str(tmp_path.resolve())}
    with pytest.raises(UserError, match="expected NAME=PATH"):
        parse_adapters(["gen1"])
    with pytest.raises(UserError, match="not a LoRA adapter directory"):
        parse_adapters([f"gen1={tmp_path / 'missing'}"])
    with pytest.raises(UserError, match="given twice"):
        parse_adapters([f"a={tmp_path}", f"a={tmp_path}"])


def test_serve_with_a_bad_adapter_exits_with_a_clear_error(tmp_path):
    result = subprocess.run([SELFDISCO, "serve", "--model", "smoke-llama", "--adapter",
                             f"x={tmp_path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "not a LoRA adapter directory" in result.stderr and "Traceback" not in result.stderr

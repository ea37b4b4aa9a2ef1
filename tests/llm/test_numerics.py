"""The numerics self-check: figures from a real server against transformers, and its verdicts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from console import SELFDISCO

from selfdisco.formatting import format_error
from selfdisco.llm.numerics import TOLERANCE, compare


def served(token_ids, logprobs, prompt="p"):
    return {"prompt": prompt, "token_ids": token_ids, "logprobs": logprobs, "text": "x"}


def reference(logprobs, top_logprobs, top_ids):
    n = len(logprobs)
    return {"logprobs": logprobs, "top_logprobs": top_logprobs, "top_ids": top_ids,
            "top_tokens": [f"t{i}" for i in top_ids], "tokens": ["s"] * n,
            "greedy_text": "y"}


def test_agreeing_logprobs_pass_with_their_figures():
    report = compare("float32", [served([1, 2], [-0.5, -1.0])],
                     [reference([-0.5001, -1.0], [-0.5001, -1.0], [1, 2])])
    assert report.ok and report.tokens == 2 and report.greedy_agree == 2
    assert report.max_abs_error == pytest.approx(1e-4, abs=1e-6)
    assert report.first_disagreement is None


def test_a_logprob_error_beyond_the_tolerance_fails():
    error = TOLERANCE["float32"] * 2
    report = compare("float32", [served([1], [-0.5])], [reference([-0.5 - error], [-0.5 - error],
                                                                  [1])])
    assert not report.ok and report.first_disagreement["position"] == 0
    assert "server.dtype" in report.refusal("m")


def test_a_greedy_token_transformers_ranks_far_below_its_best_fails():
    # The server's log-prob agrees, but transformers prefers token 7 by 5 nats: not greedy.
    report = compare("bfloat16", [served([3], [-6.0])], [reference([-6.0], [-1.0], [7])])
    assert not report.ok and report.greedy_agree == 0
    assert report.first_disagreement["reference_token"] == "t7"


def test_a_near_tie_may_break_either_way():
    tolerance = TOLERANCE["bfloat16"]
    report = compare("bfloat16", [served([3], [-0.7])],
                     [reference([-0.7], [-0.7 + tolerance / 2], [7])])
    assert report.ok and report.greedy_agree == 1


def test_an_unknown_dtype_gets_the_loosest_tolerance():
    assert compare("auto", [], []).tolerance == max(TOLERANCE.values())


@pytest.mark.integration
def test_a_server_whose_weights_differ_is_refused(tmp_path):
    """A server that computes something else than its weights say must never pass."""
    import torch
    from safetensors.torch import load_file, save_file

    from selfdisco.llm.models import resolve_model
    from selfdisco.llm.server import NumericsError, VLLMServer

    original = resolve_model("smoke-llama")
    broken = tmp_path / "smoke-llama-broken"
    shutil.copytree(original, broken)
    weights = load_file(str(broken / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    weights = {name: value + 0.5 * value.std() * torch.randn(value.shape, generator=generator)
               if value.is_floating_point() and value.dim() == 2 else value
               for name, value in weights.items()}
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})

    with VLLMServer(broken, log_path=tmp_path / "server.log", enable_lora=False) as server:
        from selfdisco.llm.numerics import check

        same = check(server.client(), str(broken), server.dtype)
        other = check(server.client(), str(original), server.dtype)
    assert same.ok and same.tokens > 0, same.summary()
    assert not other.ok and other.max_abs_error > other.tolerance, other.summary()
    message = other.refusal("smoke-llama")
    assert "server.dtype" in message and format_error(other.max_abs_error) in message

    # The same refusal stops a managed server at start-up, and nothing is left running.
    server = VLLMServer(broken, log_path=tmp_path / "server2.log", enable_lora=False,
                        check_numerics=True)
    server.model_path = str(original)  # serve the broken weights, check against the original
    server.command = lambda: _serve_other(server, broken)
    with pytest.raises(NumericsError, match="does not compute what its weights say"):
        server.start()
    assert not server.running and not server.processes()


def _serve_other(server, path):
    from selfdisco.llm.server import VLLMServer

    cmd = VLLMServer.command(server)
    cmd[cmd.index("--model") + 1] = str(path)
    return cmd


@pytest.mark.integration
def test_doctor_checks_a_bf16_server_with_figures_or_refuses_with_the_message():
    """The old configuration (bfloat16 on CPU): fine on some CPUs, garbage on others. Doctor
    either passes it with figures within the tolerance or names the problem and the fix."""
    result = subprocess.run([SELFDISCO, "doctor", "--json", "--dtype", "bfloat16"],
                            capture_output=True, text=True, timeout=900,
                            env={**os.environ})
    report = json.loads(result.stdout)
    check = report["numerics"]
    assert check["dtype"] == "bfloat16" and check["tokens"] == 32, check
    if result.returncode == 0:
        assert check["ok"] and check["max_abs_error"] <= check["tolerance"] == 1.0
        assert check["greedy_agree"] == 32
    else:
        assert not check["ok"] and "server.dtype" in check["error"]
        assert any("does not compute what its weights say" in p for p in report["problems"])
    plain = subprocess.run([SELFDISCO, "doctor", "--quick"], capture_output=True, text=True,
                           timeout=300)
    assert "CPU " in plain.stdout and "numerics" not in plain.stdout

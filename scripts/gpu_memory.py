"""The plan's memory estimates against measured peaks on a GPU.

One LoRA training job (2 steps of the gpu-selfimprove recipe, micro-batch 2 x 1024 tokens) and
the KL model (32 samples of 1024 tokens) on a random model of Qwen2.5-7B's shape, built on the
machine (no download). Prints and writes DIR/gpu_memory.json: each peak (torch's allocated and
reserved GiB, the KL model's over what was allocated before it loaded) beside the estimate of
selfdisco.llm.sizes, and what the training left allocated when it returned.

Usage: python scripts/gpu_memory.py [--tiny] [--out DIR]
  --tiny  a 2-layer model: checks the script on a CPU in seconds
  DIR     --out, else $OUT, else /tmp/gpu_memory; the model is built under /tmp (15 GiB)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from selfdisco.llm.sizes import GIB, QWEN25_7B, ModelSize
from selfdisco.losses import Candidate, screen
from selfdisco.tasks.kl import sequence_kls
from selfdisco.tasks.sampling import Sample
from selfdisco.train.adapter import train_adapter
from selfdisco.train.settings import PAPER_RECIPE, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=1024)
DPO = ("def dpo_check(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,\n"
       "              reference_rejected_logps, beta):\n"
       "    rho = (policy_chosen_logps - reference_chosen_logps) - (\n"
       "        policy_rejected_logps - reference_rejected_logps)\n"
       "    return -F.logsigmoid(beta * rho)\n")


def gib(value: float) -> float:
    return round(value / GIB, 2)


def build_model(shape: dict, where: Path, cuda: bool) -> None:
    """A random bf16 model of `shape` with the smoke model's tokenizer, saved to `where`."""
    config = Qwen2Config(max_position_embeddings=4096, **shape)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(where, max_shard_size="20GB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "checkpoints" / "models" / "smoke-llama" / name, where / name)


def measure_training(model: Path, out: Path, settings: TrainSettings, size: ModelSize,
                     cuda: bool) -> dict:
    words = " ".join(f"w{i % 97}" for i in range(700))  # over max_length: full-length rows
    pairs = [{"prompt": words, "chosen": " good " + words, "rejected": " bad " + words}] * 8
    candidate = Candidate(thought="dpo", name="dpo_check", code=DPO)
    assert screen(candidate).ok
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    result = train_adapter(model_path=str(model), data=pairs, settings=settings,
                           out_dir=out, candidate=candidate)
    estimate = size.training_gib(settings, cuda)
    return {"status": result.status, "error": result.error, "steps": result.steps_done,
            "seconds": round(time.time() - started, 1), "s_per_step": result.seconds_per_step,
            "peak_allocated_gib": gib(torch.cuda.max_memory_allocated()) if cuda else None,
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()) if cuda else None,
            "left_allocated_gib": gib(torch.cuda.memory_allocated()) if cuda else None,
            "estimate_gib": {k: round(v, 2) for k, v in estimate.items()},
            "estimate_total_gib": round(sum(estimate.values()), 2)}


def measure_kl(model: Path, adapter: Path, length: int, size: ModelSize, cuda: bool) -> dict:
    half = length // 2
    samples = [Sample(i, "x", [(7 * i + j) % 500 + 3 for j in range(half)], None, "length",
                      [(3 * i + j) % 500 + 3 for j in range(length - half)]) for i in range(32)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated() if cuda else 0
    started = time.time()
    kls = sequence_kls(str(model), str(adapter), samples,
                       dtype="bfloat16" if cuda else "float32")
    estimate = size.kl_gib("bfloat16", length, cuda)
    return {"seconds": round(time.time() - started, 1), "samples": len(kls),
            "tokens_each": length, "mean_kl": round(sum(kls) / len(kls), 4),
            "start_allocated_gib": gib(start),
            "peak_over_start_gib": gib(torch.cuda.max_memory_allocated() - start) if cuda else None,
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()) if cuda else None,
            "estimate_gib": {k: round(v, 2) for k, v in estimate.items()},
            "estimate_total_gib": round(sum(estimate.values()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model (CPU check)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(os.environ.get("OUT") or "/tmp/gpu_memory")
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/gpu_memory_work")
    shutil.rmtree(work, ignore_errors=True)
    cuda = torch.cuda.is_available()
    shape = {**QWEN25_7B, **(TINY if args.tiny else {})}
    settings = PAPER_RECIPE.with_overrides(
        max_steps=2, grad_accum=1, use_cpu=not cuda, bf16=cuda)
    if args.tiny:
        settings = settings.with_overrides(max_length=64, max_prompt_length=32)
    size = ModelSize.from_config(shape, "table")
    report: dict = {"device": torch.cuda.get_device_name() if cuda else "cpu", "shape": shape}

    started = time.time()
    build_model(shape, work / "model", cuda)
    report["build_s"] = round(time.time() - started, 1)
    report["training"] = measure_training(work / "model", work / "train", settings, size, cuda)
    print(json.dumps(report["training"], indent=1), flush=True)
    report["kl"] = measure_kl(work / "model", work / "train" / "adapter", settings.max_length,
                              size, cuda)
    print(json.dumps(report["kl"], indent=1), flush=True)
    (out / "gpu_memory.json").write_text(json.dumps(report, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

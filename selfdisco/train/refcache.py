"""The shared reference log-prob cache.

The reference policy is fixed for a whole run, so log pi_ref(chosen | prompt) and
log pi_ref(rejected | prompt) of every pair are computed once and stored on disk, one
safetensors file per key. The key covers everything the numbers depend on: the model (its
identity, selfdisco.llm.models.model_identity, and the dtype it runs in), the tokenized pairs
(which stand for the data, the tokenizer and its chat template, and the prompt cut) and the
collator's length settings. Every candidate of a run, and every later run, reads the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

KEY_VERSION = 1  # bump when the way reference log-probs are computed changes


def cache_key(*, model: dict, dtype: str, tokenized, length_settings: dict) -> str:
    """The cache key: a sha256 over the model identity, dtype, tokenized pairs and lengths.

    Args:
        model: `selfdisco.llm.models.model_identity(...)` of the reference model.
        dtype: the dtype the reference runs in (float32 and bf16 give different numbers).
        tokenized: the tokenized dataset (prompt_ids, chosen_ids, rejected_ids), in order.
        length_settings: max_length, truncation_mode and the like.
    """
    # lazy: loads numpy
    import numpy as np

    digest = hashlib.sha256()
    header = {"version": KEY_VERSION, "model": model, "dtype": dtype, "lengths": length_settings}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
        digest.update(column.encode())
        for ids in tokenized[column]:
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return digest.hexdigest()[:32]


@dataclass
class RefCache:
    """A directory of cached reference log-probs, one `<key>.safetensors` file per key."""

    directory: Path

    def path(self, key: str) -> Path:
        return Path(self.directory) / f"{key}.safetensors"

    def load(self, key: str, rows: int):
        """The (chosen, rejected) tensors stored under key, or None if absent or unreadable."""
        # lazy: loads safetensors
        from safetensors.torch import load_file

        path = self.path(key)
        if not path.exists():
            return None
        try:
            tensors = load_file(path)
            chosen, rejected = tensors["ref_chosen_logps"], tensors["ref_rejected_logps"]
        except Exception:  # noqa: BLE001 - a damaged file is recomputed, never trusted
            return None
        if chosen.shape != (rows,) or rejected.shape != (rows,):
            return None
        return chosen, rejected

    def save(self, key: str, chosen, rejected, metadata: dict | None = None) -> Path:
        """Write atomically: a temporary file in the same directory, then a rename."""
        # lazy: loads safetensors
        from safetensors.torch import save_file

        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}-", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            tensors = {"ref_chosen_logps": chosen.detach().float().cpu().contiguous(),
                       "ref_rejected_logps": rejected.detach().float().cpu().contiguous()}
            meta = {k: json.dumps(v) for k, v in (metadata or {}).items()}
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    def known(self, digest: str) -> bool:
        """Whether the entry that `remember` filed under `digest` (reference_digest) exists."""
        try:
            key = (Path(self.directory) / "index" / digest).read_text().strip()
        except OSError:
            return False
        return bool(key) and self.path(key).exists()

    def remember(self, digest: str, key: str) -> None:
        """File `key` under `digest`, so that `known` can say it is cached without tokenizing."""
        index = Path(self.directory) / "index"
        index.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{digest}-", dir=index)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        os.replace(tmp, index / digest)


def reference_digest(model: dict, dataset, settings) -> str:
    """A digest of what the reference log-probs depend on, cheap to compute before a tokenizer
    is loaded: the model's identity (model_identity), the pairs' text, and the precision and
    length settings (a TrainSettings)."""
    digest = hashlib.sha256()
    header = {"version": KEY_VERSION, "model": model, "bf16": settings.bf16,
              "max_length": settings.max_length, "max_prompt_length": settings.max_prompt_length}
    digest.update(json.dumps(header, sort_keys=True).encode())
    for row in dataset:
        digest.update(json.dumps([row["prompt"], row["chosen"], row["rejected"]]).encode())
    return digest.hexdigest()[:32]

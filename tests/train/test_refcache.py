"""The reference log-prob cache: keys, atomic writes, damaged files."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from datasets import Dataset

from selfdisco.llm.models import model_identity
from selfdisco.train.refcache import RefCache, cache_key

TOKENS = Dataset.from_list([{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6]},
                            {"prompt_ids": [7], "chosen_ids": [8], "rejected_ids": [9, 10]}])
LENGTHS = {"max_length": 128, "truncation_mode": "keep_start", "max_prompt_length": 64}


def key(**changes) -> str:
    args = {"model": {"id": "m"}, "dtype": "torch.float32", "tokenized": TOKENS,
            "length_settings": LENGTHS, **changes}
    return cache_key(**args)


def test_key_is_stable_and_covers_every_input():
    assert key() == key()
    other_tokens = Dataset.from_list([{**TOKENS[0], "chosen_ids": [4, 6]}, TOKENS[1]])
    variants = [key(model={"id": "other"}), key(dtype="torch.bfloat16"),
                key(tokenized=other_tokens), key(length_settings={**LENGTHS, "max_length": 64}),
                key(tokenized=TOKENS.select([1, 0]))]
    assert len({key(), *variants}) == 1 + len(variants)


def test_save_then_load(tmp_path):
    cache = RefCache(tmp_path)
    chosen, rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-3.0, -4.25])
    path = cache.save("abc", chosen, rejected, metadata={"rows": 2})
    assert path == tmp_path / "abc.safetensors"
    loaded = cache.load("abc", rows=2)
    assert torch.equal(loaded[0], chosen) and torch.equal(loaded[1], rejected)
    assert cache.load("abc", rows=3) is None  # a different data set size is not this entry
    assert cache.load("missing", rows=2) is None
    assert [p.name for p in tmp_path.iterdir()] == ["abc.safetensors"]


def test_damaged_file_is_ignored(tmp_path):
    cache = RefCache(tmp_path)
    cache.path("bad").write_bytes(b"\x00" * 10)
    assert cache.load("bad", rows=2) is None


def test_a_crash_while_writing_leaves_no_entry(tmp_path, monkeypatch):
    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError):
        RefCache(tmp_path).save("k", torch.zeros(2), torch.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_model_identity(tmp_path):
    assert model_identity("org/model") == {"id": "org/model"}
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (tmp_path / "model.safetensors").write_bytes(b"weights-1")
    first = model_identity(str(tmp_path))
    assert first["weights"]["model.safetensors"][0] == len(b"weights-1")
    (tmp_path / "model.safetensors").write_bytes(b"weights-2")
    assert model_identity(str(tmp_path)) != first
    (tmp_path / "selfdisco-model.json").write_text(json.dumps({"weights_sha256": "f00"}))
    assert model_identity(str(tmp_path))["weights_sha256"] == "f00"
    # Weights with a manifest are the same wherever they sit; another config is another model.
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("moved"))
    assert model_identity(str(moved)) == model_identity(str(tmp_path))
    (moved / "config.json").write_text(json.dumps({"hidden_size": 16}))
    assert model_identity(str(moved)) != model_identity(str(tmp_path))

"""Shared fixtures. Integration fixtures start real servers once per test session."""

from __future__ import annotations

import os

# Tests never reach a hub: everything they load is on this machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

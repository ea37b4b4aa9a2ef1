"""LoRA preference training under a runtime loss, with a shared reference log-prob cache.

`train_adapter` (runner.py) is imported on first use, so `import selfdisco.train` and the light
modules (settings, result, data) never pull in torch.
"""

from __future__ import annotations

from selfdisco.train.result import TrainResult
from selfdisco.train.settings import TrainSettings

__all__ = ["TrainResult", "TrainSettings", "train_adapter"]


def __getattr__(name: str):
    if name == "train_adapter":
        # lazy: loads torch, transformers
        from selfdisco.train.runner import train_adapter

        return train_adapter
    raise AttributeError(f"module 'selfdisco.train' has no attribute {name!r}")

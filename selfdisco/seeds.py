"""Every seed in a run derives from one root seed, so a run can be repeated exactly."""

from __future__ import annotations

import hashlib


def derive(root: int, *parts: object) -> int:
    """A 31-bit seed for one purpose, e.g. derive(root, "propose", generation, attempt)."""
    text = ":".join(str(p) for p in (root, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def replicate_seed(train_seed: int, replicate: int) -> int:
    """Replicate k's training seed; replicate 0 trains with the run's own, as with R = 1."""
    return train_seed if replicate == 0 else derive(train_seed, "replicate", replicate)

"""Every seed in a run derives from one root seed, so a run can be repeated exactly."""

from __future__ import annotations

import hashlib


def derive(root: int, *parts: object) -> int:
    """A 31-bit seed for one purpose, e.g. derive(root, "propose", generation, attempt)."""
    text = ":".join(str(p) for p in (root, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF

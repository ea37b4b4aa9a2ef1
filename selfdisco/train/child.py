"""The confined training process: `python -m selfdisco.train.child REQUEST` (train/confined.py
starts it under bubblewrap). It seals its confinement before anything else, then trains under the
request's candidate, writing metrics.json, train_log.jsonl and adapter/ beside the request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from selfdisco.losses import confine
from selfdisco.losses.candidate import Candidate
from selfdisco.train.confined import PAIRS_FILE
from selfdisco.train.settings import TrainSettings


def main(argv: list[str] | None = None) -> int:
    """Seal, then train under the request's candidate."""
    confine.seal()  # first: before any thread starts
    request_path = Path((sys.argv[1:] if argv is None else argv)[0])
    request = json.loads(request_path.read_text())
    # lazy: loads torch, transformers
    from selfdisco.train.adapter import train_in_process

    settings = TrainSettings().with_overrides(**request["settings"])
    train_in_process(model_path=request["model_path"],
                     data=str(request_path.parent / PAIRS_FILE), settings=settings,
                     out_dir=request_path.parent,
                     candidate=Candidate(thought="", name=request["name"], code=request["code"]),
                     ref_cache_dir=request["ref_cache_dir"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A client that answers from a recorded run's cache, with no model and no server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.llm.cache import AnswerBook, Recorder
from selfdisco.llm.client import BaseClient
from selfdisco.llm.protocol import Completion


def cache_dir_of(run_dir: str | Path) -> Path:
    """The replay cache of a run directory (or the llm/ directory itself)."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise UserError(f"replay: {run_dir} is not a directory; give a run directory that was "
                        "recorded with a live model (checkpoints/<run-id>)")
    return run_dir if run_dir.name == "llm" else run_dir / "llm"


class ReplayClient(BaseClient):
    """Same calls as `LLMClient`; each answer is the next recorded one for the same request.

    Args:
        run_dir: the recorded run directory (or its llm/ directory).
        recorder: where this run's exchanges are written, so a replayed run is itself replayable.
    """

    def __init__(self, run_dir: str | Path, *, recorder: Recorder | None = None,
                 model: str = "replay") -> None:
        self.cache_dir = cache_dir_of(run_dir)
        self.book = AnswerBook(self.cache_dir)
        self.recorder = recorder
        self.model = model
        self.adapters: dict[str, str] = {}

    def _answer(self, request: dict[str, Any]) -> list[Completion]:
        return self.book.next_answer(request)

    def list_models(self) -> list[str]:
        return [self.model, *self.adapters]

    def load_adapter(self, name: str, path: str | Path) -> None:
        self.adapters[name] = str(path)
        if self.recorder is not None:
            self.recorder.record_adapter("load_adapter", name, str(path))

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)
        if self.recorder is not None:
            self.recorder.record_adapter("unload_adapter", name)

    def close(self) -> None:
        pass

    def __enter__(self) -> ReplayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

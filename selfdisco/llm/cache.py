"""The replay cache: every request and its answers, appended to <run>/llm/requests.jsonl.

One JSON object a line: key, kind ("chat", "complete", "load_adapter", "unload_adapter"), the
logical request (sampling options and seed included), the answers, and timing. Lines are written
whole under a lock, so threads can share one recorder; a torn last line (a killed process) is
skipped on reading.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.llm.protocol import Completion, describe_request, request_key

CACHE_FILE = "requests.jsonl"
FORMAT_VERSION = 1


class Recorder:
    """Appends exchanges to a run's llm/ directory."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        self._lock = threading.Lock()

    def record(self, request: dict[str, Any], completions: list[Completion], *,
               elapsed_s: float) -> None:
        self._write({
            "v": FORMAT_VERSION,
            "key": request_key(request),
            "kind": request["endpoint"],
            "time": time.time(),
            "elapsed_s": round(elapsed_s, 4),
            "request": request,
            "completions": [c.to_dict() for c in completions],
        })

    def record_adapter(self, kind: str, name: str, path: str | None = None) -> None:
        self._write({"v": FORMAT_VERSION, "kind": kind, "time": time.time(),
                     "name": name, "path": path})

    def _write(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()


def read_entries(directory: str | Path) -> list[dict[str, Any]]:
    """All complete entries of a cache directory, in the order they were written."""
    path = Path(directory) / CACHE_FILE
    if not path.exists():
        raise UserError(f"no replay cache at {path}: the run directory must hold llm/{CACHE_FILE} "
                        "(written by a run that used a live model)")
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut short when the recording process was killed
    return entries


class AnswerBook:
    """Recorded answers by request key; the same request asked again gets the next answer."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._answers: dict[str, deque[list[Completion]]] = defaultdict(deque)
        self._served: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        for entry in read_entries(directory):
            if entry.get("kind") in ("chat", "complete"):
                completions = [Completion.from_dict(c) for c in entry["completions"]]
                self._answers[entry["key"]].append(completions)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self._answers.values()) + sum(self._served.values())

    def next_answer(self, request: dict[str, Any]) -> list[Completion]:
        key = request_key(request)
        with self._lock:
            queue = self._answers.get(key)
            if queue:
                self._served[key] += 1
                return queue.popleft()
            served = self._served.get(key, 0)
        where = self.directory / CACHE_FILE
        if served:
            raise UserError(f"replay: the request was recorded {served} time(s) and has been "
                            f"asked more often now: {describe_request(request)} (key {key}, "
                            f"cache {where})")
        raise UserError(f"replay: no recorded answer for {describe_request(request)} (key {key}) "
                        f"in {where}. Replay needs the same requests, with the same options and "
                        "seeds, as the recorded run.")

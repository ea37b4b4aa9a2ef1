"""The run's event log: an append-only JSONL file that the TUI and the headless printer read.

Every line is one JSON object with the schema version `v`, a sequence number `seq`, a Unix time
`t`, a `type` from EVENT_TYPES, and that type's fields. Writers append whole lines and flush;
readers tolerate a partial last line (a writer may be mid-write) and pick it up on the next read.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
EVENTS_FILE = "events.jsonl"

# type -> the fields it carries (beyond v, seq, t, type). Documentation and a check for writers.
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "run_started": ("run_id", "task", "preset", "proposer", "generations",
                    "candidates_per_generation"),
    "run_resumed": ("run_id", "requeued"),
    "run_finished": ("reason", "best_id", "best_fitness"),
    "generation_started": ("generation",),
    "generation_finished": ("generation", "best_id", "best_fitness"),
    "stage": ("generation", "stage", "state", "detail"),
    "candidate_proposed": ("id", "generation", "name", "thought", "code", "proposer", "attempt"),
    "candidate_rejected": ("id", "stage", "reason"),
    "candidate_status": ("id", "status"),
    "training_progress": ("id", "step", "total", "loss"),
    "candidate_scored": ("id", "fitness", "stderr", "metrics"),
    "candidate_diverged": ("id", "step", "reason"),
    "candidate_failed": ("id", "reason"),
    "proposer_changed": ("proposer", "adapter", "fitness"),
    "control": ("command",),
    "server": ("state", "detail"),
    "log": ("level", "message"),
}

# Candidate statuses, in the order a candidate moves through them.
STATUSES = ("proposed", "rejected", "training", "scoring", "scored", "diverged", "failed")


class EventWriter:
    """Appends events to a run's events.jsonl; safe to share between threads."""

    def __init__(self, run_dir: Path, listeners: list | None = None):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = sum(1 for _ in read_events(self.path))
        self.listeners = list(listeners or [])

    def emit(self, type: str, **fields: Any) -> dict:
        if type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type!r}")
        with self._lock:
            self._seq += 1
            event = {"v": SCHEMA_VERSION, "seq": self._seq, "t": round(time.time(), 3),
                     "type": type, **fields}
            line = json.dumps(event, default=str) + "\n"
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        for listener in self.listeners:
            listener(event)
        return event


def read_events(path: Path) -> Iterator[dict]:
    """Every complete event in the file; a torn last line is skipped."""
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith("\n"):
                break
            try:
                yield json.loads(line)
            except ValueError:
                continue


class EventTail:
    """Follows a growing events.jsonl: each `poll()` returns the events appended since the last."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0

    def poll(self) -> list[dict]:
        lines, self._offset = read_appended(self.path, self._offset)
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


def read_appended(path: Path, offset: int) -> tuple[list[bytes], int]:
    """Whole lines written to a file since byte `offset`, and the new offset.

    A torn last line (a writer mid-write) is left for the next call.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), offset + end

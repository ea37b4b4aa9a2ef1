"""Hands new events from a growing events.jsonl to a UI without flooding it.

A reader thread calls `read()` as often as it likes; the UI calls `drain()` when told there is
something new and gets every pending event at once, with bursts of training progress collapsed
to the latest step of each candidate. The writer (the loop) never waits on either.
"""

from __future__ import annotations

import threading
from pathlib import Path

from selfdisco.rundir.events import EVENTS_FILE, EventTail

# Event types of which only the latest per candidate matters.
COALESCED_TYPES = ("training_progress",)


def coalesce(events: list[dict]) -> list[dict]:
    """Drop progress events that a later one for the same candidate supersedes."""
    latest: dict[tuple[str, str], int] = {}
    for index, event in enumerate(events):
        if event.get("type") in COALESCED_TYPES:
            latest[(event["type"], str(event.get("id")))] = index
    return [event for index, event in enumerate(events)
            if event.get("type") not in COALESCED_TYPES
            or latest[(event["type"], str(event.get("id")))] == index]


class EventFeed:
    """A thread-safe buffer between an EventTail and the UI."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self._tail = EventTail(self.path)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._pending: list[dict] = []

    def read(self) -> int:
        """Read what was appended since the last call; returns how many events arrived."""
        with self._read_lock:
            events = self._tail.poll()
        if events:
            with self._lock:
                self._pending.extend(events)
        return len(events)

    def drain(self) -> list[dict]:
        """Every event read and not yet drained, in log order, coalesced."""
        with self._lock:
            events, self._pending = self._pending, []
        return coalesce(events)

"""The run's event log: an append-only JSONL file that the TUI and the headless printer read.

Every line is one JSON object with the schema version `v`, a sequence number `seq`, a Unix time
`t`, a `type` from EVENT_TYPES, and exactly that type's fields (`emit` refuses others). This
module is the one declaration of the event vocabulary and of the candidate statuses. Writers
append whole lines and flush; readers tolerate a partial last line (a writer may be mid-write)
and pick it up on the next read.
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

# Candidate statuses, in the order a candidate moves through them, and the groups the code asks
# about. The package refers to a status by these names only (tests/rundir/test_status_names.py);
# the strings are what the archive and the event log store.
PROPOSED = "proposed"  # screened and waiting for a worker
REJECTED = "rejected"  # refused before training (parse, static check, screening, duplicate)
TRAINING = "training"
SCORING = "scoring"  # a policy (or the base model, trained by nobody) being measured
SCORED = "scored"  # evaluated with a fitness
DIVERGED = "diverged"  # training met a non-finite loss or gradient
FAILED = "failed"  # evaluation ended without a fitness for another cause
STATUSES = (PROPOSED, REJECTED, TRAINING, SCORING, SCORED, DIVERGED, FAILED)
IN_EVALUATION = (TRAINING, SCORING)  # a worker has it; a resumed run re-queues it
EVALUATED = (SCORED, DIVERGED, FAILED)  # evaluation ended: a worker's Result's status
EVALUATION_FAILED = (DIVERGED, FAILED)  # evaluated without a fitness
FINAL = (REJECTED, *EVALUATED)  # a candidate never leaves these
UNSCORED = (REJECTED, *EVALUATION_FAILED)  # final without a fitness

LOG_LEVELS = ("info", "warning", "error")
# A held-out point's status: measured, or not (its reason kept).
HELDOUT_DONE = "done"
HELDOUT_FAILED = "failed"
HELDOUT_STATUSES = (HELDOUT_DONE, HELDOUT_FAILED)
Number = int | float

# type -> its fields (beyond v, seq, t, type) and the types their values may have. Every field
# is present in every event of its type (emit refuses one missing or unknown); a field that may
# have no value says so with `| None`.
EVENT_TYPES: dict[str, dict[str, Any]] = {
    # notes: what a reader must know before any figure (e.g. a self-judged task), in order.
    "run_started": {"run_id": str, "task": str, "preset": str, "proposer": str,
                    "generations": int, "candidates_per_generation": int, "notes": list},
    "run_resumed": {"run_id": str, "requeued": list},
    "run_finished": {"reason": str, "stopped": bool, "best_id": str | None,
                     "best_fitness": Number | None},
    "generation_started": {"generation": int},
    "generation_finished": {"generation": int, "best_id": str | None,
                            "best_fitness": Number | None},
    "stage": {"generation": int, "stage": str, "state": str, "detail": str},
    "candidate_proposed": {"id": str, "generation": int, "name": str, "thought": str,
                           "code": str, "proposer": str, "attempt": int},
    "candidate_rejected": {"id": str, "stage": str, "reason": str},
    "candidate_status": {"id": str, "status": str},
    "training_progress": {"id": str, "step": int, "total": int, "loss": Number | None},
    "candidate_scored": {"id": str, "fitness": Number, "stderr": Number | None, "metrics": dict},
    "candidate_diverged": {"id": str, "step": int | None, "reason": str | None},
    "candidate_failed": {"id": str, "reason": str | None},
    # multi-fidelity (search/fidelity.py): a result at a cheap stage, then the decision on it
    "candidate_stage": {"id": str, "stage": str, "fidelity": Number, "status": str,
                        "fitness": Number | None, "decision": str | None, "rule": str | None},
    "proposer_changed": {"proposer": str, "adapter": str, "fitness": Number | None},
    # a challenger proposer against the current one (discovery/proposer/duel.py); valid:
    # valid-and-novel answers of `samples` each; difference and stderr: of the paired rates
    "proposer_duel": {"generation": int, "current": str, "challenger": str, "samples": int,
                      "current_valid": int, "challenger_valid": int, "difference": Number,
                      "stderr": Number, "promoted": bool, "reason": str},
    "control": {"command": str},
    "server": {"state": str, "detail": str},
    "log": {"level": str, "message": str},
    # held-out evaluation (selfdisco.heldout): points measured after (or beside) discovery.
    "heldout_started": {"protocols": list, "losses": list, "points": int,
                        "estimate_s": Number | None},
    "heldout_point": {"protocol": str, "loss_id": str, "beta": Number, "seed": int,
                      "status": str, "metrics": dict, "done": int, "total": int},
    "heldout_finished": {"protocols": list, "stopped": bool},
}
# (type, field) -> the values it takes. candidate_status carries only the statuses that have no
# event of their own.
FIELD_VALUES: dict[tuple[str, str], tuple[str, ...]] = {
    ("candidate_status", "status"): IN_EVALUATION,
    ("log", "level"): LOG_LEVELS,
    ("heldout_point", "status"): HELDOUT_STATUSES,
}
ENVELOPE: dict[str, Any] = {"v": int, "seq": int, "t": Number, "type": str}


def check_fields(type: str, fields: dict[str, Any]) -> None:
    """Raise ValueError, naming what is wrong, unless `fields` are exactly `type`'s declared
    fields with values of the declared types."""
    declared = EVENT_TYPES.get(type)
    if declared is None:
        raise ValueError(f"unknown event type {type!r}; known: {', '.join(EVENT_TYPES)}")
    missing = [name for name in declared if name not in fields]
    unknown = [name for name in fields if name not in declared]
    if missing or unknown:
        wrong = ([f"missing field(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown field(s) {', '.join(unknown)}"] if unknown else [])
        raise ValueError(f"event {type!r} has the wrong fields ({'; '.join(wrong)}); "
                         f"it carries exactly: {', '.join(declared)} (selfdisco/rundir/events.py)")
    for name, kind in declared.items():
        value = fields[name]
        if not isinstance(value, kind):
            raise ValueError(f"event {type!r}: field {name!r} is {value!r}, not {_name(kind)}")
        allowed = FIELD_VALUES.get((type, name))
        if allowed is not None and value not in allowed:
            raise ValueError(f"event {type!r}: field {name!r} is {value!r}, not one of "
                             f"{', '.join(allowed)}")


def check_event(event: dict[str, Any]) -> None:
    """Raise ValueError unless a logged event (envelope and fields) matches the schema."""
    for name, kind in ENVELOPE.items():
        if not isinstance(event.get(name), kind):
            raise ValueError(f"event {event.get('seq')}: {name!r} is {event.get(name)!r}, "
                             f"not {_name(kind)}")
    if event["v"] != SCHEMA_VERSION:
        raise ValueError(f"event {event['seq']}: schema version {event['v']}, this selfdisco "
                         f"reads version {SCHEMA_VERSION}")
    check_fields(event["type"], {k: v for k, v in event.items() if k not in ENVELOPE})


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind)


class EventWriter:
    """Appends events to a run's events.jsonl; safe to share between threads."""

    def __init__(self, run_dir: Path, listeners: list | None = None):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq = sum(1 for _ in read_events(self.path))
        self.listeners = list(listeners or [])

    def emit(self, type: str, **fields: Any) -> dict:
        """Append one event; ValueError (before anything is written) if its fields do not
        match its type's declaration in EVENT_TYPES."""
        check_fields(type, fields)
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

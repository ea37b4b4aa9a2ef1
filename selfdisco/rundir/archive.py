"""The run's archive: every candidate with its code, status, fitness, lineage and seeds (SQLite).

Each write commits at once (WAL journal), so killing the process at any moment loses nothing
that was recorded. `requeue_unfinished()` puts candidates that were being evaluated back in the
queue when a run resumes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdisco.rundir.events import EVALUATED, IN_EVALUATION, PROPOSED, SCORED, STATUSES
from selfdisco.rundir.shape import Reach

ARCHIVE_FILE = "archive.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS candidates (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    generation INTEGER NOT NULL,       -- 0 for burn-in
    kind TEXT NOT NULL,                -- base | burn_in | proposal
    slot INTEGER,                      -- which of the K slots of its generation
    attempt INTEGER,                   -- 0, then 1.. for resamples after rejections
    name TEXT, thought TEXT, code TEXT, code_sha TEXT,
    proposed_name TEXT, rename_reason TEXT,  -- the proposer's name, when it was not kept, and why
    raw_text TEXT,                     -- the proposer's answer as it came
    status TEXT NOT NULL,
    stage TEXT,                        -- where a rejection or failure happened
    reason TEXT,
    fitness REAL, stderr REAL,
    metrics TEXT,                      -- JSON
    fingerprint TEXT,                  -- JSON
    shape TEXT,                        -- JSON: loss and slope on the rho grid (losses/shape.py)
    proposer TEXT,                     -- base, or the id of the candidate whose adapter proposed
    seeds TEXT,                        -- JSON
    timings TEXT,                      -- JSON, seconds per stage
    created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    generation INTEGER PRIMARY KEY,
    state TEXT NOT NULL,               -- proposing | evaluating | done
    proposer TEXT,
    started REAL, finished REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS duels (     -- one per proposer duel (discovery/proposer/duel.py)
    generation INTEGER PRIMARY KEY,    -- the duel after this generation
    record TEXT NOT NULL               -- JSON: duel.DuelRecord
);
CREATE TABLE IF NOT EXISTS replicates (  -- one per (candidate, training seed) evaluated
    id TEXT NOT NULL,
    replicate INTEGER NOT NULL,
    result TEXT NOT NULL,              -- JSON: records.Result
    PRIMARY KEY (id, replicate)
);
CREATE TABLE IF NOT EXISTS stages (  -- multi-fidelity: a candidate's result at a cheap stage
    id TEXT NOT NULL,
    stage TEXT NOT NULL,
    entry TEXT NOT NULL,               -- JSON: fidelity, result, decision, rule (fidelity.py)
    PRIMARY KEY (id, stage)
);
CREATE TABLE IF NOT EXISTS heldout (  -- one per held-out point measured (selfdisco.heldout)
    protocol TEXT NOT NULL,
    loss_id TEXT NOT NULL,             -- a candidate id, or a catalog name for a reference
    beta REAL NOT NULL,
    seed INTEGER NOT NULL,             -- the training seed
    status TEXT NOT NULL,              -- done | failed
    metrics TEXT NOT NULL,             -- JSON
    created REAL NOT NULL,
    PRIMARY KEY (protocol, loss_id, beta, seed)
);
"""

JSON_FIELDS = ("metrics", "fingerprint", "seeds", "timings", "shape")
NULLABLE_JSON = ("fingerprint", "shape")  # None when absent; the other JSON fields are {}
# Columns added after archives were first written: an older archive gets them, empty, on open.
ADDED_COLUMNS = (("shape", "TEXT"), ("proposed_name", "TEXT"), ("rename_reason", "TEXT"))
REFERENCE_SHAPE = "reference_shape"  # meta key: dpo's shape at the run's beta
RHO_REACH = "rho_reach"  # meta key: the rho the burn-in's training reached (shape.Reach)


@dataclass
class Row:
    id: str
    seq: int
    generation: int
    kind: str
    status: str
    slot: int | None = None
    attempt: int | None = None
    name: str | None = None
    thought: str | None = None
    proposed_name: str | None = None  # the proposer's name when `name` differs (losses/names.py)
    rename_reason: str | None = None
    code: str | None = None
    code_sha: str | None = None
    raw_text: str | None = None
    stage: str | None = None
    reason: str | None = None
    fitness: float | None = None
    stderr: float | None = None
    metrics: dict = field(default_factory=dict)
    fingerprint: Any = None
    shape: dict | None = None  # LossShape.to_dict(), recorded at screening
    proposer: str | None = None
    seeds: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0

    @property
    def evaluated(self) -> bool:
        return self.status in EVALUATED


@dataclass
class HeldoutRow:
    """One held-out point: a loss trained at `beta` with training seed `seed`, measured by
    `protocol` (selfdisco.heldout)."""

    protocol: str
    loss_id: str
    beta: float
    seed: int
    status: str
    metrics: dict
    created: float = 0.0


class Archive:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ARCHIVE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._add_columns()

    def _add_columns(self) -> None:
        have = {row[1] for row in self.db.execute("PRAGMA table_info(candidates)")}
        for name, kind in ADDED_COLUMNS:
            if name not in have:
                self.db.execute(f"ALTER TABLE candidates ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.db.close()

    # candidates
    def add(self, id: str, generation: int, kind: str, status: str, **fields: Any) -> Row:
        _check_status(status)
        now = time.time()
        seq = self.db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM candidates").fetchone()[0]
        values = {"id": id, "seq": seq, "generation": generation, "kind": kind,
                  "status": status, "created": now, "updated": now, **fields}
        for key in JSON_FIELDS:
            if key in values:
                values[key] = json.dumps(values[key])
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self.db.execute(f"INSERT INTO candidates ({columns}) VALUES ({marks})",
                        list(values.values()))
        return self.get(id)

    def update(self, id: str, **fields: Any) -> Row:
        if "status" in fields:
            _check_status(fields["status"])
        fields["updated"] = time.time()
        for key in JSON_FIELDS:
            if key in fields:
                fields[key] = json.dumps(fields[key])
        assignments = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE candidates SET {assignments} WHERE id = ?",
                        [*fields.values(), id])
        return self.get(id)

    def get(self, id: str) -> Row | None:
        row = self.db.execute("SELECT * FROM candidates WHERE id = ?", (id,)).fetchone()
        return _row(row) if row else None

    def rows(self, where: str = "1", params: tuple = ()) -> list[Row]:
        query = f"SELECT * FROM candidates WHERE {where} ORDER BY seq"
        return [_row(r) for r in self.db.execute(query, params)]

    def best(self) -> Row | None:
        """The scored candidate with the highest fitness (burn-in and base included)."""
        row = self.db.execute("SELECT * FROM candidates WHERE status = ? AND fitness IS NOT "
                              "NULL ORDER BY fitness DESC, seq LIMIT 1", (SCORED,)).fetchone()
        return _row(row) if row else None

    def requeue_unfinished(self) -> list[str]:
        """Candidates caught mid-evaluation go back to PROPOSED; returns their ids."""
        marks = ", ".join("?" for _ in IN_EVALUATION)
        ids = [r[0] for r in self.db.execute(
            f"SELECT id FROM candidates WHERE status IN ({marks}) ORDER BY seq", IN_EVALUATION)]
        for id in ids:
            self.update(id, status=PROPOSED, stage=None, reason=None)
        return ids

    # replicates: a candidate's per-seed results, combined into its row when all are in
    def put_replicate(self, id: str, replicate: int, result: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO replicates (id, replicate, result) VALUES "
                        "(?, ?, ?)", (id, replicate, json.dumps(result, default=str)))

    def replicates(self, id: str) -> dict[int, dict]:
        """Replicate index -> the recorded per-seed result (a records.Result dict)."""
        return {r[0]: json.loads(r[1]) for r in self.db.execute(
            "SELECT replicate, result FROM replicates WHERE id = ? ORDER BY replicate", (id,))}

    # held-out points (selfdisco.heldout): one row per measured (protocol, loss, beta, seed)
    def put_heldout(self, protocol: str, loss_id: str, beta: float, seed: int, status: str,
                    metrics: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO heldout (protocol, loss_id, beta, seed, status, "
                        "metrics, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (protocol, loss_id, float(beta), int(seed), status,
                         json.dumps(metrics, default=str), time.time()))

    def heldout_rows(self, protocol: str | None = None) -> list[HeldoutRow]:
        """The recorded held-out points, of one protocol or of all, in the order measured."""
        where, params = ("protocol = ?", (protocol,)) if protocol else ("1", ())
        return [HeldoutRow(protocol=r[0], loss_id=r[1], beta=r[2], seed=r[3], status=r[4],
                           metrics=json.loads(r[5]), created=r[6]) for r in self.db.execute(
            "SELECT protocol, loss_id, beta, seed, status, metrics, created FROM heldout "
            f"WHERE {where} ORDER BY created", params)]

    # proposer duels
    def put_duel(self, generation: int, record: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO duels (generation, record) VALUES (?, ?)",
                        (generation, json.dumps(record)))

    def duels(self) -> dict[int, dict]:
        """Generation -> its duel's record (a duel.DuelRecord dict)."""
        return {r[0]: json.loads(r[1]) for r in self.db.execute(
            "SELECT generation, record FROM duels ORDER BY generation")}

    # stages: multi-fidelity results and the decisions taken on them (search/fidelity.py)
    def put_stage(self, id: str, stage: str, entry: dict) -> None:
        self.db.execute("INSERT OR REPLACE INTO stages (id, stage, entry) VALUES (?, ?, ?)",
                        (id, stage, json.dumps(entry, default=str)))

    def stage(self, id: str, stage: str) -> dict | None:
        row = self.db.execute("SELECT entry FROM stages WHERE id = ? AND stage = ?",
                              (id, stage)).fetchone()
        return json.loads(row[0]) if row else None

    def stages(self) -> dict[str, dict[str, dict]]:
        """Candidate id -> stage -> its entry, for every stage recorded."""
        out: dict[str, dict[str, dict]] = {}
        for id, stage, entry in self.db.execute("SELECT id, stage, entry FROM stages"):
            out.setdefault(id, {})[stage] = json.loads(entry)
        return out

    # generations
    def set_generation(self, generation: int, state: str, proposer: str | None = None) -> None:
        now = time.time()
        self.db.execute(
            "INSERT INTO generations (generation, state, proposer, started) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(generation) DO UPDATE SET state = excluded.state, "
            "proposer = COALESCE(excluded.proposer, proposer)",
            (generation, state, proposer, now))
        if state == "done":
            self.db.execute("UPDATE generations SET finished = ? WHERE generation = ?",
                            (now, generation))

    def generation_state(self, generation: int) -> str | None:
        row = self.db.execute("SELECT state FROM generations WHERE generation = ?",
                              (generation,)).fetchone()
        return row[0] if row else None

    def generations(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM generations ORDER BY generation")]

    # meta
    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def reach(self) -> Reach | None:
        """The rho the run's burn-in training reached, where duplicates are judged; None for a
        run that recorded none (from before the reach, or without rho logged: the full grid)."""
        data = self.get_meta(RHO_REACH)
        return Reach.from_dict(data) if data else None


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown candidate status {status!r}; known: {', '.join(STATUSES)}")


def _row(row: sqlite3.Row) -> Row:
    data = dict(row)
    for key in JSON_FIELDS:
        data[key] = json.loads(data[key]) if data.get(key) else (
            None if key in NULLABLE_JSON else {})
    return Row(**data)


def read_shapes(run_dir: Path, id: str) -> tuple[dict | None, dict | None]:
    """A candidate's recorded loss shape and the run's reference (dpo) shape, read without
    writing, so safe beside the running loop; None for each that is not recorded (also for an
    archive from before shapes were)."""
    path = Path(run_dir) / ARCHIVE_FILE
    if not path.is_file():
        return None, None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(candidates)")}
            shape = db.execute("SELECT shape FROM candidates WHERE id = ?", (id,)).fetchone() \
                if "shape" in columns else None
            reference = db.execute("SELECT value FROM meta WHERE key = ?",
                                   (REFERENCE_SHAPE,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None, None
    return (json.loads(shape[0]) if shape and shape[0] else None,
            json.loads(reference[0]) if reference and reference[0] else None)

"""A run's state, folded from its event log: the one fold that both the TUI and the headless
printer (selfdisco/tui/printer.py) render from.

Pure Python (no Textual): `RunState.apply(event)` takes events in log order and keeps the
candidates table, the header fields, the log lines and what changed since the view last looked
(`take_changes`). Generation 0 holds the burn-in (the task's baseline losses); discovery
generations count from 1. selfdisco/tui/rows.py declares a row and a log line;
selfdisco/formatting.py has the matching text helpers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.discovery.proposer import duel, lineage
from selfdisco.formatting import format_duration, format_fitness
from selfdisco.rundir.control import apply_command
from selfdisco.rundir.events import (
    DIVERGED,
    EVALUATED,
    EVENTS_FILE,
    FAILED,
    FINAL,
    HELDOUT_DONE,
    PROPOSED,
    REJECTED,
    SCORED,
    TRAINING,
    read_events,
)
from selfdisco.tui.rows import CandidateRow, LogLine, row_sort_key

LOG_LINES_KEPT = 1000


class RunState:
    """Everything the event log says about a run, updated one event at a time."""

    def __init__(self) -> None:
        self.run_id: str | None = None
        self.task: str | None = None
        self.preset: str | None = None
        self.proposer: str = "base"
        self.generations: int | None = None  # the generation limit
        self.candidates_per_generation: int | None = None
        self.generation: int | None = None  # the current (or last) generation
        self.stage: dict[str, Any] | None = None  # the latest stage event
        self.started_t: float | None = None
        self.evaluation_started_t: float | None = None  # the first candidate sent to a worker
        self.last_t: float | None = None
        self.finished_t: float | None = None
        self.finish_reason: str | None = None
        self.best_id: str | None = None
        self.paused = False
        self.stop_requested = False
        self.server_state: str | None = None
        self.seq = 0  # the last event's sequence number
        self.events_seen = 0
        self.candidates: dict[str, CandidateRow] = {}
        self.duels: list[dict] = []  # proposer_duel events, in order
        self.generation_times: dict[int, list[float | None]] = {}  # generation -> [start, end]
        self.log: deque[LogLine] = deque(maxlen=LOG_LINES_KEPT)
        self.changed: set[str] = set()  # candidate ids changed since take_changes()
        self.header_changed = True
        self._new_log: list[LogLine] = []
        self._heldout: tuple[float, int] | None = None  # held-out start time, points to measure
        self._heldout_measured = 0  # points measured since that start

    # ---- reading -------------------------------------------------------------------------------

    @classmethod
    def from_events(cls, events: Iterable[dict]) -> RunState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    @classmethod
    def from_run_dir(cls, run_dir: Path) -> RunState:
        """The state of a run from its events.jsonl as it is now."""
        return cls.from_events(read_events(Path(run_dir) / EVENTS_FILE))

    def apply(self, event: dict) -> None:
        """Fold one event into the state; unknown event types are ignored."""
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        self.events_seen += 1
        self.seq = event.get("seq", self.seq)
        t = event.get("t")
        if isinstance(t, int | float):
            self.last_t = float(t)
            if self.started_t is None:
                self.started_t = float(t)
        if handler is not None:
            handler(event)
        self.header_changed = True

    def take_changes(self) -> tuple[set[str], list[LogLine]]:
        """Candidate ids changed and log lines added since the last call."""
        changed, self.changed = self.changed, set()
        lines, self._new_log = self._new_log, []
        return changed, lines

    # ---- derived values ------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.finished_t is not None

    @property
    def interrupted(self) -> bool:
        """The run shut its model server down without finishing: its process has ended."""
        return not self.finished and self.server_state == "stopped"

    def rows(self, text: str = "") -> list[CandidateRow]:
        """Candidates matching `text`, best fitness first; those without a fitness follow in
        arrival order."""
        rows = [row for row in self.candidates.values() if row.matches(text)]
        return sorted(rows, key=row_sort_key)

    def best(self) -> CandidateRow | None:
        scored = [row for row in self.candidates.values() if row.fitness is not None]
        return max(scored, key=lambda row: (row.fitness, -row.order), default=None)

    def comparison(self) -> stats.Comparison | None:
        """Every scored candidate against the best and dpo: ties and paired differences."""
        return stats.compare(self.candidates.values())

    def best_so_far(self) -> dict[int, float]:
        """Generation -> the best fitness among candidates of that generation or earlier."""
        best_of: dict[int, float] = {}
        for row in self.candidates.values():
            if row.fitness is not None:
                best_of[row.generation] = max(best_of.get(row.generation, row.fitness),
                                              row.fitness)
        running: dict[int, float] = {}
        best: float | None = None
        for generation in sorted(best_of):
            best = best_of[generation] if best is None else max(best, best_of[generation])
            running[generation] = best
        return running

    def lineage(self) -> list[lineage.Figures]:
        """Each proposer's figures so far (selfdisco/discovery/proposer/lineage.py)."""
        return lineage.by_proposer(self.candidates.values())

    def counts(self, generation: int | None = None) -> dict[str, int]:
        """Status -> number of candidates (of one generation when given)."""
        counts: dict[str, int] = {}
        for row in self.candidates.values():
            if generation is None or row.generation == generation:
                counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    def elapsed(self, now: float) -> float | None:
        """Seconds since the run started (until it finished, for a finished run)."""
        if self.started_t is None:
            return None
        if self.finished_t is not None:
            end = self.finished_t
        elif self.interrupted:
            end = self.last_t or now
        else:
            end = max(now, self.last_t or now)
        return max(0.0, end - self.started_t)

    def eta(self, now: float) -> float | None:
        """Estimated seconds left, from the pace of the generations (or candidates) so far."""
        if self.finished or self.interrupted or not self.generations or self.generation is None:
            return None
        done = [end - start for gen, (start, end) in self.generation_times.items()
                if gen >= 1 and start is not None and end is not None]
        if not done:
            return self._eta_from_candidates(now)
        per_generation = sum(done) / len(done)
        current = max(self.generation, 1)
        start = (self.generation_times.get(current) or [None, None])[0]
        in_current = now - start if start is not None else 0.0
        after_current = max(0, self.generations - current)
        return max(0.0, per_generation - in_current) + per_generation * after_current

    def _eta_from_candidates(self, now: float) -> float | None:
        """Before a generation has finished: the pace of the candidates evaluated so far
        (burn-in included) times the evaluations still to come."""
        evaluated = [row.finished_t for row in self.candidates.values()
                     if row.status in EVALUATED and row.finished_t is not None]
        if self.evaluation_started_t is None or not evaluated or not self.candidates_per_generation:
            return None
        last = max(evaluated)
        # The candidate in hand has taken (now - last) so far: the pace is at least that slow.
        pace = max((last - self.evaluation_started_t) / len(evaluated),
                   (now - self.evaluation_started_t) / (len(evaluated) + 1))
        waiting = sum(row.status not in FINAL for row in self.candidates.values())
        discovery = sum(row.generation >= 1 and row.status != REJECTED
                        for row in self.candidates.values())
        to_come = max(0, self.candidates_per_generation * self.generations - discovery)
        return max(0.0, pace * (waiting + to_come) - min(now - last, pace))

    # ---- event handlers ------------------------------------------------------------------------

    def _log(self, event: dict, level: str, text: str) -> None:
        line = LogLine(float(event.get("t") or 0.0), level, text)
        self.log.append(line)
        self._new_log.append(line)

    def _row(self, event: dict) -> CandidateRow:
        """The candidate an event is about; a placeholder if its proposal was never seen."""
        key = str(event.get("id"))
        row = self.candidates.get(key)
        if row is None:
            row = CandidateRow(id=key, generation=self.generation or 0, name="?",
                               order=len(self.candidates))
            self.candidates[key] = row
        self.changed.add(key)
        return row

    def _on_run_started(self, event: dict) -> None:
        self.run_id = event.get("run_id") or self.run_id
        self.task = event.get("task") or self.task
        self.preset = event.get("preset") or self.preset
        # "local" (a server selfdisco starts) proposes with the base model until a promotion.
        proposer = event.get("proposer")
        self.proposer = "base" if proposer in (None, "", "local") else str(proposer)
        self.generations = event.get("generations")
        self.candidates_per_generation = event.get("candidates_per_generation")
        self.started_t = float(event.get("t") or self.started_t or 0.0)
        self._log(event, "info", f"run {self.run_id} started: task {self.task}, preset "
                  f"{self.preset}, {self.generations} generations of "
                  f"{self.candidates_per_generation}")

    def _on_run_resumed(self, event: dict) -> None:
        self.run_id = event.get("run_id") or self.run_id
        self.finished_t = None
        self.finish_reason = None
        self.server_state = None
        self.paused = False
        self.stop_requested = False
        requeued = [str(key) for key in event.get("requeued") or ()]
        for key in requeued:
            if key in self.candidates:
                row = self.candidates[key]
                row.status, row.step, row.total, row.loss = PROPOSED, None, None, None
                self.changed.add(key)
        which = ", ".join(map(str, requeued)) if requeued else "nothing in flight"
        self._log(event, "info", f"run resumed; re-queued {which}")

    def _on_run_finished(self, event: dict) -> None:
        self.finished_t = float(event.get("t") or self.last_t or 0.0)
        self.finish_reason = event.get("reason")
        self.best_id = _key(event.get("best_id"))
        self.paused = False
        best = event.get("best_fitness")
        best_text = (f", best {self.best_id} ({format_fitness(best)})"
                     if isinstance(best, int | float) else "")
        self._log(event, "info", f"run finished: {self.finish_reason}{best_text}")

    def _on_generation_started(self, event: dict) -> None:
        generation = int(event.get("generation") or 0)
        self.generation = generation
        self.generation_times[generation] = [event.get("t"), None]
        label = "burn-in" if generation == 0 else f"generation {generation}"
        self._log(event, "info", f"{label} started")

    def _on_generation_finished(self, event: dict) -> None:
        generation = int(event.get("generation") or 0)
        times = self.generation_times.setdefault(generation, [None, None])
        times[1] = event.get("t")
        self.best_id = _key(event.get("best_id")) or self.best_id
        best = event.get("best_fitness")
        label = "burn-in" if generation == 0 else f"generation {generation}"
        best_text = (f"; best so far {self.best_id} ({format_fitness(best)})"
                     if isinstance(best, int | float) else "")
        self._log(event, "info", f"{label} finished{best_text}")

    def _on_stage(self, event: dict) -> None:
        self.stage = {key: event.get(key) for key in ("generation", "stage", "state", "detail")}
        if event.get("generation") is not None:
            self.generation = int(event["generation"])
        stage = str(event.get("stage") or "").replace("_", "-")
        where = f"generation {self.generation} " if self.generation else ""
        detail = f": {event['detail']}" if event.get("detail") else ""
        self._log(event, "info", f"{where}{stage} {event.get('state')}{detail}")

    def _on_candidate_proposed(self, event: dict) -> None:
        key = str(event.get("id"))
        previous = self.candidates.get(key)
        row = CandidateRow(
            id=key,
            generation=int(event.get("generation") or 0),
            name=str(event.get("name") or "?"),
            order=previous.order if previous else len(self.candidates),
            thought=str(event.get("thought") or ""),
            code=str(event.get("code") or ""),
            proposer=str(event.get("proposer") or ""),
            attempt=int(event.get("attempt") or 0),
            proposed_t=event.get("t"),
        )
        self.candidates[key] = row
        self.changed.add(key)

    def _on_candidate_rejected(self, event: dict) -> None:
        row = self._row(event)
        row.status, row.stage, row.reason = REJECTED, event.get("stage"), event.get("reason")
        row.finished_t = event.get("t")

    def _on_candidate_status(self, event: dict) -> None:
        if self.evaluation_started_t is None and isinstance(event.get("t"), int | float):
            self.evaluation_started_t = float(event["t"])
        row = self._row(event)
        row.status = str(event.get("status") or row.status)

    def _on_training_progress(self, event: dict) -> None:
        row = self._row(event)
        if row.status == PROPOSED:
            row.status = TRAINING
        row.step, row.total, row.loss = event.get("step"), event.get("total"), event.get("loss")

    def _on_candidate_scored(self, event: dict) -> None:
        row = self._row(event)
        row.status = SCORED
        row.fitness = _float(event.get("fitness"))
        row.stderr = _float(event.get("stderr"))
        row.metrics = dict(event.get("metrics") or {})
        row.finished_t = event.get("t")

    def _on_candidate_diverged(self, event: dict) -> None:
        row = self._row(event)
        row.status, row.reason, row.finished_t = DIVERGED, event.get("reason"), event.get("t")
        row.step = event.get("step", row.step)
        self._log(event, "warning", f"{row.id} {row.name} diverged: {row.reason}")

    def _on_candidate_failed(self, event: dict) -> None:
        row = self._row(event)
        row.status, row.reason, row.finished_t = FAILED, event.get("reason"), event.get("t")
        self._log(event, "error", f"{row.id} {row.name} failed: {row.reason}")

    def _on_candidate_stage(self, event: dict) -> None:
        """A multi-fidelity stage's result (kept in stages), then its decision (logged)."""
        row = self._row(event)
        fields = ("fidelity", "status", "fitness", "decision", "rule")
        row.stages[str(event.get("stage"))] = {key: event.get(key) for key in fields}
        if event.get("decision"):
            self._log(event, "info", f"{row.id} {row.name} {event.get('stage')} stage: "
                                     f"{event.get('rule')}")

    def _on_proposer_changed(self, event: dict) -> None:
        adapter = event.get("adapter")
        self.proposer = str(event.get("proposer") or (f"adapter {adapter}" if adapter else "base"))
        fitness = event.get("fitness")
        fitness_text = (f" (fitness {format_fitness(fitness)})"
                        if isinstance(fitness, int | float) else "")
        self._log(event, "info", f"proposer is now {self.proposer}{fitness_text}")

    def _on_proposer_duel(self, event: dict) -> None:
        if isinstance(event.get("difference"), (int, float)) and event.get("reason"):
            event = {**event, "reason": duel.reworded(event["reason"], event["difference"],
                                                      event.get("stderr") or 0.0)}
        self.duels.append(event)
        promoted = bool(event.get("promoted"))
        n = event.get("samples")
        self._log(event, "info" if promoted else "warning", (
            f"duel after generation {event.get('generation')}: {event.get('challenger')} "
            f"{event.get('challenger_valid')}/{n} valid and novel vs {event.get('current')} "
            f"{event.get('current_valid')}/{n}: {'promoted' if promoted else 'not promoted'} "
            f"({event.get('reason')})"))

    def _on_control(self, event: dict) -> None:
        command = event.get("command")
        self.paused, self.stop_requested = apply_command(command, self.paused,
                                                         self.stop_requested)
        self._log(event, "info", f"control: {command}")

    def _on_server(self, event: dict) -> None:
        self.server_state = event.get("state")
        detail = event.get("detail")
        level = "error" if self.server_state in ("crashed", "failed", "error") else "info"
        self._log(event, level, f"server {self.server_state}" + (f": {detail}" if detail else ""))

    def _on_log(self, event: dict) -> None:
        self._log(event, str(event.get("level") or "info"), str(event.get("message") or ""))

    # held-out evaluation (selfdisco.heldout): a log line each, no candidate rows
    def _on_heldout_started(self, event: dict) -> None:
        self._heldout = (float(event.get("t") or 0.0), int(event.get("points") or 0))
        self._heldout_measured = 0
        estimate = event.get("estimate_s")
        when = (f", about {estimate / 60:.0f} min" if isinstance(estimate, int | float)
                else ", no time estimate")
        self._log(event, "info", f"held-out evaluation: {event.get('points')} points to measure"
                  f" ({', '.join(map(str, event.get('protocols') or ()))}; losses "
                  f"{', '.join(map(str, event.get('losses') or ()))}){when}")

    def _on_heldout_point(self, event: dict) -> None:
        metrics = event.get("metrics") or {}
        status = event.get("status")
        text = (metrics.get("summary") if status == HELDOUT_DONE else
                f"failed: {metrics.get('reason') or 'no reason recorded'}")
        self._heldout_measured += 1
        self._log(event, "info" if status == HELDOUT_DONE else "warning",
                  f"held-out [{event.get('done')}/{event.get('total')}] {event.get('protocol')}"
                  f" {event.get('loss_id')} beta={event.get('beta')} seed={event.get('seed')}: "
                  f"{text or 'measured'}{self._heldout_left(event)}")

    def _heldout_left(self, event: dict) -> str:
        """', about 12m left': the pace of the points measured so far times those to come."""
        if self._heldout is None:
            return ""
        started, points = self._heldout
        left = points - self._heldout_measured
        pace = (float(event.get("t") or started) - started) / self._heldout_measured
        return f", about {format_duration(pace * left)} left" if left > 0 else ""

    def _on_heldout_finished(self, event: dict) -> None:
        how = "stopped" if event.get("stopped") else "finished"
        self._log(event, "info", f"held-out evaluation {how}")


def _key(value: Any) -> str | None:
    return None if value is None else str(value)


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None

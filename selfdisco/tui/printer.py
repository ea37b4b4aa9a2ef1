"""The headless view of a run, drawn from the same fold of the event stream as the TUI: the
TUI's log lines, a line each time a candidate's status changes, and progress bars."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from selfdisco.formatting import format_fitness, format_kl
from selfdisco.rundir.events import IN_EVALUATION, REJECTED, SCORED
from selfdisco.tui.rows import CandidateRow
from selfdisco.tui.state import RunState


def bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


def status_text(row: CandidateRow) -> str | None:
    """What a line says when a candidate reaches its status; None where the log says it
    (diverged, failed) or there is nothing to say yet (proposed)."""
    if row.status == REJECTED:
        return f"rejected ({row.stage}): {(row.reason or '')[:110]}"
    if row.status in IN_EVALUATION:
        return row.status
    if row.status == SCORED:
        kl = f", KL {format_kl(row.kl)}" if row.kl is not None else ""
        return f"fitness {format_fitness(row.fitness, row.stderr, missing='-')}{kl}"
    return None


class Printer:
    """An event listener: folds each event into a RunState (as the TUI does) and prints what
    changed; progress bars redraw in place on a TTY, and print at each quarter otherwise."""

    def __init__(self, out: TextIO | None = None, run_dir: Path | None = None):
        """Args:
            out: where to print (stdout by default).
            run_dir: a run being resumed: its events so far are folded first, not printed.
        """
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.started = time.monotonic()
        self.state = RunState.from_run_dir(run_dir) if run_dir else RunState()
        self.state.take_changes()
        # id -> (status, step) as last printed
        self._printed = {key: (row.status, row.step) for key, row in self.state.candidates.items()}
        self._quarter: dict[str, int] = {}  # id -> the last quarter of training printed
        self._bar_open = False

    def __call__(self, event: dict) -> None:
        self.state.apply(event)
        changed, lines = self.state.take_changes()
        for line in lines:
            self._line(line.text if line.level == "info" else f"{line.level}: {line.text}")
        for key in sorted(changed, key=lambda key: self.state.candidates[key].order):
            self._candidate(self.state.candidates[key])

    def _candidate(self, row: CandidateRow) -> None:
        status, step = self._printed.get(row.id, (None, None))
        self._printed[row.id] = (row.status, row.step)
        if row.status != status:
            self._quarter.pop(row.id, None)
            text = status_text(row)
            if text:
                self._line(f"  {row.id} {row.name} {text}")
        if row.status in IN_EVALUATION and row.step != step and row.total:
            self._progress(row)

    def _progress(self, row: CandidateRow) -> None:
        text = f"  {row.id} {bar(row.step or 0, row.total or 0)}"
        if self.tty:
            self.out.write("\r" + text)
            self.out.flush()
            self._bar_open = True
            return
        quarter = int(4 * (row.step or 0) / (row.total or 1))
        if quarter > self._quarter.get(row.id, 0):
            self._quarter[row.id] = quarter
            self._line(text)

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.out.write("\n")
            self._bar_open = False
        elapsed = time.monotonic() - self.started
        self.out.write(f"{int(elapsed // 60):3d}:{int(elapsed % 60):02d}  {text}\n")
        self.out.flush()

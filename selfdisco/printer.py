"""The headless view of a run: one line per stage and per candidate, with progress bars."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from selfdisco.formatting import format_fitness


def bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"


class Printer:
    """An event listener that prints a readable log; progress bars redraw in place on a TTY."""

    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.started = time.monotonic()
        self.names: dict[str, str] = {}
        self._quarter: dict[str, int] = {}
        self._bar_open = False

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.out.write("\n")
            self._bar_open = False
        elapsed = time.monotonic() - self.started
        self.out.write(f"{int(elapsed // 60):3d}:{int(elapsed % 60):02d}  {text}\n")
        self.out.flush()

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        handler = getattr(self, f"_on_{kind}", None)
        if handler:
            handler(event)

    def _on_run_started(self, e: dict) -> None:
        self._line(f"run {e['run_id']}: task {e['task']}, preset {e['preset']}, "
                   f"{e['generations']} generations x {e['candidates_per_generation']} "
                   f"candidates, proposer {e['proposer']}")

    def _on_run_resumed(self, e: dict) -> None:
        again = f"; re-queued {', '.join(e['requeued'])}" if e.get("requeued") else ""
        self._line(f"resuming {e['run_id']}{again}")

    def _on_server(self, e: dict) -> None:
        self._line(f"server {e['state']} {e.get('detail') or ''}".rstrip())

    def _on_stage(self, e: dict) -> None:
        where = f"g{e['generation']}" if e["generation"] else "burn-in"
        detail = f": {e['detail']}" if e.get("detail") else ""
        self._line(f"[{where}] {e['stage']} {e['state']}{detail}")

    def _on_candidate_proposed(self, e: dict) -> None:
        self.names[e["id"]] = e.get("name") or e["id"]

    def _on_candidate_rejected(self, e: dict) -> None:
        name = self.names.get(e["id"], "")
        self._line(f"  {e['id']} {name} rejected ({e['stage']}): {e['reason'][:110]}")

    def _on_candidate_status(self, e: dict) -> None:
        if e["status"] == "training":
            self._line(f"  {e['id']} {self.names.get(e['id'], '')} training")
        elif e["status"] == "scoring":
            self._line(f"  {e['id']} {self.names.get(e['id'], '')} scoring")

    def _on_training_progress(self, e: dict) -> None:
        total, step = e.get("total") or 0, e.get("step") or 0
        text = f"  {e['id']} {bar(step, total)}"
        if self.tty:
            self.out.write("\r" + text)
            self.out.flush()
            self._bar_open = True
            return
        quarter = int(4 * step / total) if total else 0
        if quarter > self._quarter.get(e["id"], 0):
            self._quarter[e["id"]] = quarter
            self._line(text)

    def _on_candidate_scored(self, e: dict) -> None:
        kl = (e.get("metrics") or {}).get("kl")
        kl_text = f", KL {kl:.3f}" if isinstance(kl, (int, float)) else ""
        self._line(f"  {e['id']} {self.names.get(e['id'], '')} fitness "
                   f"{format_fitness(e['fitness'], e.get('stderr'), missing='-')}{kl_text}")

    def _on_candidate_diverged(self, e: dict) -> None:
        self._line(f"  {e['id']} diverged: {e.get('reason')}")

    def _on_candidate_failed(self, e: dict) -> None:
        self._line(f"  {e['id']} failed: {e.get('reason')}")

    def _on_proposer_changed(self, e: dict) -> None:
        self._line(f"proposer is now {e['proposer']} (fitness {format_fitness(e['fitness'])})")

    def _on_generation_finished(self, e: dict) -> None:
        self._line(f"[g{e['generation']}] done; best so far {e.get('best_id')} "
                   f"{format_fitness(e.get('best_fitness'), missing='-')}")

    def _on_control(self, e: dict) -> None:
        self._line(f"control: {e['command']}")

    def _on_log(self, e: dict) -> None:
        self._line(f"{e['level']}: {e['message']}")

    def _on_run_finished(self, e: dict) -> None:
        self._line(f"finished ({e['reason']}); best {e.get('best_id')} "
                   f"{format_fitness(e.get('best_fitness'), missing='-')}")

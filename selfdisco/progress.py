"""Progress of a long step (a server start, sampling, scoring): on a terminal one line rewritten
in place, in logs and pipes a line every ~10 s. A step that ends within `delay_s` prints nothing."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from selfdisco.formatting import format_duration

INTERVAL_S = 10.0  # between lines in a log or a pipe
DELAY_S = 3.0  # before the first line on a terminal
REDRAW_S = 0.2  # between redraws on a terminal


class Progress:
    """Reports `label: n of N (elapsed)` or `label: elapsed, note`; thread-safe.

    Args:
        label: what the step does, e.g. "sampling" or "starting vLLM for smoke-llama".
        total: the number of items, or None when the step is not counted.
        unit: the items' name after the total, e.g. "prompts".
        stream: where to write (default: stderr); a terminal gets the updating line.
        interval_s: seconds between lines when `stream` is not a terminal (INTERVAL_S).
        clock: seconds, for tests.
    """

    def __init__(self, label: str, total: int | None = None, *, unit: str = "",
                 stream: TextIO | None = None, interval_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = INTERVAL_S if interval_s is None else interval_s
        self.clock = clock
        self.done, self.note = 0, ""
        self.start = clock()
        self.shown: float | None = None  # when a line was last written
        self._lock = threading.Lock()

    def advance(self, count: int = 1) -> None:
        """`count` more items are done."""
        with self._lock:
            self.done += count
            self._show()

    def update(self, done: int | None = None, note: str | None = None) -> None:
        """Set the items done and the note (what the step is waiting for)."""
        with self._lock:
            if done is not None:
                self.done = done
            if note is not None:
                self.note = note
            self._show()

    def close(self, ok: bool = True) -> None:
        """End the step: a last line when any line was written (on a terminal, a failed step's
        line is ended so that the error starts a line of its own)."""
        with self._lock:
            if self.shown is None:
                return
            count = f", {self._count()}" if self.total is not None else ""
            if ok:
                self._write(f"{self.label}: done{count} in "
                            f"{format_duration(self.clock() - self.start)}", final=True)
            elif self.tty:
                self._write(self.text(), final=True)
            self.shown = None

    def text(self) -> str:
        """The current line."""
        elapsed = format_duration(self.clock() - self.start)
        if self.total is None:
            return f"{self.label}: {elapsed}" + (f", {self.note}" if self.note else "")
        return f"{self.label}: {self._count()} ({elapsed})" + (f", {self.note}"
                                                                if self.note else "")

    def _count(self) -> str:
        return f"{self.done} of {self.total}" + (f" {self.unit}" if self.unit else "")

    def _show(self) -> None:
        now = self.clock()
        if self.tty:
            due = (now - self.start >= DELAY_S
                   and (self.shown is None or now - self.shown >= REDRAW_S))
        else:
            due = now - (self.shown if self.shown is not None else self.start) >= self.interval_s
        if due:
            self._write(self.text(), final=False)
            self.shown = now

    def _write(self, line: str, final: bool) -> None:
        try:
            if self.tty:
                width = shutil.get_terminal_size().columns - 1
                self.stream.write("\r" + line[:width] + "\x1b[K" + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream never stops the work it reports on
            pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)

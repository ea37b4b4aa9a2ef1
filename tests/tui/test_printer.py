"""The headless printer: it prints from the TUI's fold of the event stream (RunState)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

from test_tui_data import RECORDED_RUN

from selfdisco.rundir.events import read_events
from selfdisco.tui.printer import Printer
from selfdisco.tui.state import RunState


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def printed(out: io.StringIO | None = None) -> list[str]:
    """The printer's lines for the recorded run, without their elapsed-time prefix."""
    out = out or io.StringIO()
    printer = Printer(out)
    for event in read_events(RECORDED_RUN):
        printer(event)
    return [re.sub(r"^ *\d+:\d\d  ", "", line) for line in out.getvalue().splitlines()]


def test_printer_says_what_the_tuis_fold_says():
    lines = printed()
    state = RunState.from_events(read_events(RECORDED_RUN))
    # The TUI's log lines, in order, warnings and errors marked as such.
    log = [line.text if line.level == "info" else f"{line.level}: {line.text}"
           for line in state.log]
    assert [line for line in lines if not line.startswith("  ")] == log
    assert "warning: g01-c2-r1 exponential_ratio diverged: diverged at step 5: loss is inf" in log
    # One line per candidate reaching each status, with the fold's fitness and KL.
    for row in state.candidates.values():
        if row.status == "scored":
            kl = f", KL {row.kl:.3f}" if row.kl is not None else ""
            assert f"  {row.id} {row.name} fitness {row.fitness:.4f} ± {row.stderr:.4f}{kl}" \
                in lines
        if row.status == "rejected":
            assert f"  {row.id} {row.name} rejected ({row.stage}): {row.reason[:110]}" in lines
    assert lines.count("  g01-c3 adaptive_margin_hinge training") == 1
    assert lines.count("  g01-c3 adaptive_margin_hinge scoring") == 1
    # Off a terminal, training progress prints at each quarter.
    assert [line for line in lines if line.startswith("  g01-c3 [")] == [
        "  g01-c3 [#####---------------] 3/12", "  g01-c3 [##########----------] 6/12",
        "  g01-c3 [###############-----] 9/12", "  g01-c3 [####################] 12/12"]
    assert lines[-2:] == ["run finished: generation limit reached, best g02-c3 (0.2603)",
                          "server stopped"]


def test_printer_redraws_progress_in_place_on_a_terminal():
    out = Terminal()
    printed(out)
    text = out.getvalue()
    assert "\r  g01-c3 [#" in text
    # A bar is ended by a newline before the next line, never overwritten by one.
    for chunk in text.split("\r")[1:]:
        bar, _, rest = chunk.partition("\n")
        assert bar.startswith("  ") and "]" in bar and "\r" not in bar
        assert not rest or rest[:7].strip(), rest


def test_printer_imports_neither_textual_nor_torch():
    code = ("import sys, json; import selfdisco.tui.printer; "
            "print(json.dumps(sorted(m for m in ('textual', 'torch') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert json.loads(result.stdout) == [], result.stderr

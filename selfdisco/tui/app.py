"""The Textual app that follows a run's event log and steers the run through its control file.

A thread worker reads events.jsonl into an EventFeed and posts one EventsReady message when
something new is there (never more than one pending); the handler folds the events into the
RunState and refreshes the widgets. The app only reads the event log and only appends to
control.jsonl, so the loop never waits on it.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label
from textual.worker import get_current_worker

from selfdisco.rundir import control
from selfdisco.rundir.events import PROPOSED, REJECTED
from selfdisco.tui.feed import EventFeed
from selfdisco.tui.proposers import ProposerPanel, ProposersScreen
from selfdisco.tui.rows import CandidateRow, LogLine
from selfdisco.tui.rundir import header_fields, read_config
from selfdisco.tui.shapes import RecordedShape, read_shape
from selfdisco.tui.state import RunState
from selfdisco.tui.widgets import (
    CandidatesTable,
    CandidateView,
    FitnessPlot,
    LogPane,
    RunHeader,
)


class EventsReady(Message):
    """New events are waiting in the feed."""


class ShapeReady(Message):
    """A candidate's shape was read (or a message saying why there is none)."""

    def __init__(self, key: str, status: str, shape: RecordedShape | str) -> None:
        super().__init__()
        self.key, self.status, self.shape = key, status, shape


class FilterInput(Input):
    BINDINGS = [Binding("escape", "app.close_filter(True)", "clear filter")]


class DetailScreen(Screen):
    """One candidate on the whole screen; updates live."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back"),
                Binding("enter", "app.pop_screen", "back", show=False)]

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        yield CandidateView(id="detail-view")
        yield Footer()

    def on_mount(self) -> None:
        self.app.show_selected()


class CloseRunScreen(ModalScreen[str | None]):
    """Asked when closing the TUI of a run it started: stop the run, or leave it running?"""

    BINDINGS = [Binding("s", "choose('stop')", "stop the run"),
                Binding("l", "choose('detach')", "leave it running"),
                Binding("escape", "choose(None)", "cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="close-dialog"):
            yield Label("This run was started here. Stop it, or leave it running in the "
                        "background?\n(Watch it again later with `selfdisco tui RUN_DIR`.)")
            with Horizontal():
                yield Button("Stop the run (s)", id="stop", variant="error")
                yield Button("Leave it running (l)", id="detach", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)


class DiscoApp(App[str]):
    """Watch and steer one discovery run."""

    TITLE = "selfdisco"
    CSS_PATH = "app.tcss"
    BINDINGS = [
        Binding("q", "quit_run", "quit"),
        Binding("p", "toggle_pause", "pause/resume"),
        Binding("s", "stop", "stop after generation"),
        Binding("slash", "filter", "filter"),
        Binding("l", "proposers", "proposers"),
    ]

    def __init__(self, run_dir: Path, *, owns_run: bool = False,
                 process: subprocess.Popen | None = None,
                 clock: Callable[[], float] = time.time, poll_interval: float = 0.25) -> None:
        """Args:
            run_dir: the run directory (holds events.jsonl).
            owns_run: this process started the run; closing asks whether to stop it.
            process: the run's process, when the caller started one: if it ends before the
                run finishes, the log says so (and closing does not ask).
            clock: the current time (tests freeze it).
            poll_interval: seconds between reads of the event log.
        """
        super().__init__()
        self.run_dir = Path(run_dir)
        self.owns_run = owns_run
        self.process = process
        self.process_ended = False
        self.clock = clock
        self.poll_interval = poll_interval
        self.state = RunState()
        self.feed = EventFeed(self.run_dir)
        self.filter_text = ""
        self.requested: str | None = None  # a control command sent and not yet obeyed
        # candidate id -> (its status when read, its recorded shape or why there is none)
        self.shapes: dict[str, tuple[str, RecordedShape | str]] = {}
        self.shapes_pending: set[str] = set()
        self._notified = False
        config = read_config(self.run_dir)
        self.state.task, self.state.preset = header_fields(config)

    # ---- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield RunHeader(str(self.run_dir), id="header")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield CandidatesTable(id="candidates")
                yield FitnessPlot(id="fitness")
            yield CandidateView(id="selected")
        yield LogPane(id="log", max_lines=1000, wrap=True)
        yield FilterInput(placeholder="filter by name or status; enter to keep, esc to clear",
                          id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#candidates").border_title = "candidates"
        self.query_one("#log").border_title = "log"
        self.query_one("#selected", CandidateView).border_title = "selected"
        self.query_one("#fitness", FitnessPlot).draw(self.state)
        self.query_one("#selected", CandidateView).show(None, None)
        self.query_one("#candidates").focus()
        self.refresh_header()
        self.set_interval(1.0, self.refresh_header)
        self.follow()

    # ---- reading the log -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="follow")
    def follow(self) -> None:
        """Read the event log until the app closes; tell the UI when something arrived."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            if self.feed.read() and not self._notified:
                self._notified = True
                self.post_message(EventsReady())
            time.sleep(self.poll_interval)

    def on_events_ready(self, _: EventsReady) -> None:
        self._notified = False
        events = self.feed.drain()
        for event in events:
            self.state.apply(event)
            if event.get("type") == "control":
                self.requested = None
        if events:
            self.refresh_all()

    def refresh_all(self) -> None:
        changed, lines = self.state.take_changes()
        self.refresh_header()
        table = self.query_one("#candidates", CandidatesTable)
        rows = self.state.rows(self.filter_text)
        table.sync(rows, changed, self.state.comparison())
        shown = f"{len(rows)} of {len(self.state.candidates)}" if self.filter_text \
            else str(len(rows))
        table.border_title = f"candidates ({shown})" + \
            (f"  filter: {self.filter_text}" if self.filter_text else "")
        if changed:
            self.query_one("#fitness", FitnessPlot).draw(self.state)
        self.query_one("#log", LogPane).add(lines, self.state.started_t)
        self.show_selected(only_if_in=changed)
        if isinstance(self.screen, ProposersScreen):
            self.screen.query_one(ProposerPanel).show(self.state)

    def refresh_header(self) -> None:
        self.check_process()
        self.query_one("#header", RunHeader).show(self.state, self.clock(), self.requested)

    def check_process(self) -> None:
        """Say so in the log when the run's process ended without finishing the run."""
        if self.process is None or self.process_ended or self.process.poll() is None:
            return
        self.process_ended = True
        self.feed.read()  # its last events may still be unread
        self.on_events_ready(EventsReady())
        if not self.state.finished:
            self.query_one("#log", LogPane).add([LogLine(
                self.clock(), "error", f"the run's process ended (exit code "
                f"{self.process.returncode}) before the run finished; see "
                f"{self.run_dir / 'run.log'}, and continue it with `selfdisco resume "
                f"{self.run_dir}`")], self.state.started_t)

    # ---- the selected candidate ----------------------------------------------------------------

    def selected_row(self) -> CandidateRow | None:
        key = self.query_one("#candidates", CandidatesTable).selected_key
        return self.state.candidates.get(key) if key else None

    def show_selected(self, only_if_in: set[str] | None = None) -> None:
        views = [(self.query_one("#selected", CandidateView), self.selected_row())]
        if isinstance(self.screen, DetailScreen):
            detail = self.screen
            views.append((detail.query_one(CandidateView), self.state.candidates.get(detail.key)))
        for view, row in views:
            if row is not None and only_if_in is not None and row.id not in only_if_in:
                continue
            view.show(row, self.shape_for(row) if row else None)

    def shape_for(self, row: CandidateRow) -> RecordedShape | str:
        """The row's recorded loss shape, a message saying why there is none, or "reading".
        A shape found is kept; a missing one is looked for again once the row's status changes
        (screening records it)."""
        if row.status == REJECTED and row.stage != "duplicate":
            return "no loss shape: rejected at screening"
        if not row.code:
            return "no loss: this row is the untrained policy"
        status, shape = self.shapes.get(row.id, (None, None))
        if isinstance(shape, RecordedShape) or status == row.status:
            return shape
        if row.id not in self.shapes_pending:
            self.shapes_pending.add(row.id)
            self.load_shape(row.id, row.status)
        return shape or "reading the loss shape..."

    @work(thread=True, group="shapes")
    def load_shape(self, key: str, status: str) -> None:
        shape = read_shape(self.run_dir, key)
        if shape is None:
            shape = ("loss shape shown once the candidate passes screening"
                     if status == PROPOSED else
                     "no loss shape recorded (runs before shapes were recorded at screening "
                     "have none)")
        self.post_message(ShapeReady(key, status, shape))

    def on_shape_ready(self, message: ShapeReady) -> None:
        self.shapes[message.key] = (message.status, message.shape)
        self.shapes_pending.discard(message.key)
        self.show_selected(only_if_in={message.key})

    def on_data_table_row_highlighted(self, _: DataTable.RowHighlighted) -> None:
        self.show_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if key in self.state.candidates:
            self.push_screen(DetailScreen(key))

    # ---- keys ----------------------------------------------------------------------------------

    def send(self, command: str) -> None:
        if self.state.finished:
            self.notify("The run has finished; there is nothing to steer.")
            return
        control.send(self.run_dir, command)
        self.requested = command
        self.refresh_header()
        self.notify(f"Sent {command}: the loop obeys at its next checkpoint.")

    def action_toggle_pause(self) -> None:
        paused = self.state.paused if self.requested not in ("pause", "resume") \
            else self.requested == "pause"
        self.send("resume" if paused else "pause")

    def action_proposers(self) -> None:
        self.push_screen(ProposersScreen())

    def action_stop(self) -> None:
        self.send("stop")

    def action_filter(self) -> None:
        box = self.query_one("#filter", FilterInput)
        box.display = True
        box.focus()

    def action_close_filter(self, clear: bool = False) -> None:
        box = self.query_one("#filter", FilterInput)
        if clear:
            box.value = ""
            self.set_filter("")
        box.display = False
        self.query_one("#candidates").focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.set_filter(event.value)

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self.action_close_filter()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self.refresh_all()
        self.show_selected()

    def action_quit_run(self) -> None:
        if self.owns_run and not self.state.finished and not self.process_ended:
            self.push_screen(CloseRunScreen(), callback=self._close_chosen)
        else:
            self.exit("detach")

    def _close_chosen(self, choice: str | None) -> None:
        if choice:
            self.exit(choice)

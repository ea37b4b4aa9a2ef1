"""The TUI's widgets. Each renders part of a RunState; none reads files or owns state."""

from __future__ import annotations

from rich.console import Group
from rich.syntax import Syntax
from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.events import Resize
from textual.widgets import DataTable, RichLog, Static
from textual_plotext import PlotextPlot

from selfdisco import stats
from selfdisco.formatting import (
    format_difference,
    format_duration,
    format_fitness,
    format_kl,
    format_offset,
)
from selfdisco.rundir.events import (
    DIVERGED,
    EVALUATION_FAILED,
    FAILED,
    PROPOSED,
    REJECTED,
    SCORED,
    SCORING,
    TRAINING,
)
from selfdisco.rundir.shape import LossShape
from selfdisco.tui.rows import CandidateRow, LogLine
from selfdisco.tui.shapes import RecordedShape
from selfdisco.tui.state import RunState

STATUS_STYLES = {
    PROPOSED: "dim",
    REJECTED: "red dim",
    TRAINING: "yellow",
    SCORING: "cyan",
    SCORED: "green",
    DIVERGED: "magenta",
    FAILED: "bold red",
}
STAGE_STATES = {"start": "running", "end": "done"}
# Server states worth a flag in the header (the others are in the log).
SERVER_TROUBLE = ("starting", "restarting", "crashed", "failed", "error", "down")
QUIET_S = 600  # past this long without an event, the header says so
LEVEL_STYLES = {"info": "", "warning": "yellow", "error": "bold red"}
NAME_WIDTH = 30  # longer names are cut in the table (the detail shows them whole)
COLUMNS = (("id", "id"), ("gen", "generation"), ("name", "name"), ("status", "status"),
           ("fitness ± stderr", "fitness"), ("tie", "tie"), ("vs dpo", "vs_dpo"),
           ("KL", "kl"))
# Columns that depend on every row (the best, dpo, the pooled seed variance): redrawn for all.
SHARED_COLUMNS = ("fitness", "tie", "vs_dpo")


def generation_label(generation: int) -> str:
    return "burn-in" if generation == 0 else str(generation)


class RunHeader(Static):
    """Run, task, preset, proposer, generation, elapsed time and the estimate of time left."""

    def __init__(self, run_dir: str, **options) -> None:
        super().__init__(**options)
        self.run_dir = run_dir

    def show(self, state: RunState, now: float, requested: str | None = None) -> None:
        line1 = Text.assemble(
            ("selfdisco ", "bold"), (state.run_id or "(waiting for the run's first event)",
                                     "bold cyan"),
            "   task ", (state.task or "?", "bold"),
            "   preset ", (state.preset or "?", "bold"),
            "   proposer ", (state.proposer, "bold magenta"),
        )
        generation = "-"
        if state.generation is not None:
            limit = f"/{state.generations}" if state.generations else ""
            generation = generation_label(state.generation)
            generation = generation if state.generation == 0 else f"{generation}{limit}"
        line2 = Text.assemble(
            "generation ", (generation, "bold"),
            "   ", _stage_text(state),
            "   elapsed ", (format_duration(state.elapsed(now)), "bold"),
            "   left ", (_left_text(state, now), "bold"),
        )
        flags = _flags(state, requested, now, self.run_dir)
        if flags:
            line2.append("   ")
            line2.append(flags, style="bold yellow")
        self.update(Group(line1, line2))


def _stage_text(state: RunState) -> Text:
    if state.finished:
        return Text(f"finished: {state.finish_reason}", style="green")
    if state.interrupted:
        return Text("stopped before finishing", style="bold red")
    if not state.stage:
        return Text("starting", style="dim")
    stage = state.stage
    name = str(stage.get("stage") or "").replace("_", "-")
    done = STAGE_STATES.get(str(stage.get("state")), stage.get("state") or "")
    text = f"{name} {done}".strip()
    if stage.get("detail"):
        text += f" ({stage['detail']})"
    return Text(text)


def _left_text(state: RunState, now: float) -> str:
    if state.finished:
        return "0s"
    if state.interrupted:
        return "-"
    eta = state.eta(now)
    return "estimating" if eta is None else f"~{format_duration(eta)}"


def _flags(state: RunState, requested: str | None, now: float, run_dir: str) -> str:
    flags = []
    if state.interrupted:
        return f"continue it with: selfdisco resume {run_dir}"
    if state.paused:
        flags.append("PAUSED" + (" (resume requested)" if requested == "resume" else ""))
    elif requested == "pause":
        flags.append("pause requested")
    if state.stop_requested or requested == "stop":
        flags.append("stopping after this generation")
    if state.server_state in SERVER_TROUBLE:
        flags.append(f"server {state.server_state}")
    quiet = now - state.last_t if state.last_t is not None and not state.finished else 0.0
    if quiet > QUIET_S:
        flags.append(f"no news for {format_duration(quiet)}")
    return "   ".join(flags)


class CandidatesTable(DataTable):
    """Every candidate, best fitness first, updated in place as events arrive."""

    BINDINGS = [Binding("enter", "select_cursor", "detail", show=True)]

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for label, key in COLUMNS:
            self.add_column(label, key=key)

    @property
    def selected_key(self) -> str | None:
        if self.row_count == 0:
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def sync(self, rows: list[CandidateRow], changed: set[str],
             comparison: stats.Comparison | None = None) -> None:
        """Show `rows` in this order; rebuild only when the order or the set of rows changed.
        `comparison` (stats.compare over every candidate) fills the tie and vs-dpo columns
        (">": better than dpo, stats.BETTER_RULE)."""
        keys = [row.id for row in rows]
        current = [key.value for key in self.rows]
        if keys == current:
            for row in rows if changed else []:
                for (_, column), value in zip(COLUMNS, _cells(row, comparison), strict=True):
                    if row.id in changed or column in SHARED_COLUMNS:
                        self.update_cell(row.id, column, value, update_width=True)
            return
        selected = self.selected_key
        self.clear()
        for row in rows:
            self.add_row(*_cells(row, comparison), key=row.id)
        if selected in keys:
            self.move_cursor(row=keys.index(selected))


def _cells(row: CandidateRow, comparison: stats.Comparison | None) -> tuple:
    kl = row.kl
    tie = to_dpo = ""
    stderr = row.stderr
    if comparison is not None and row.fitness is not None:
        stderr = stats.row_stderr(row, comparison.pooled)
        tie = "best" if row.id == comparison.best.id else (
            "=" if row.id in comparison.tied else "")
        to_dpo = format_difference(comparison.to_reference.get(row.id), missing="")
        if row.id in comparison.better:  # better than dpo after the run's correction
            to_dpo = "> " + to_dpo
    return (
        row.id,
        generation_label(row.generation),
        row.name if len(row.name) <= NAME_WIDTH else row.name[:NAME_WIDTH - 1] + "…",
        Text(row.status_text, style=STATUS_STYLES.get(row.status, "")),
        Text(format_fitness(row.fitness, stderr), justify="right"),
        Text(tie, style="bold green", justify="center"),
        Text(to_dpo, justify="right"),
        Text(format_kl(kl, missing=""), justify="right"),
    )


class FitnessPlot(PlotextPlot):
    """Every candidate's fitness by generation, and the best so far."""

    def draw(self, state: RunState) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("fitness by generation: • each candidate ± 1 s.e., line: best so far")
        scored = [row for row in state.candidates.values() if row.fitness is not None]
        if scored:
            best = state.best_so_far()
            plt.plot(list(best), list(best.values()), marker="braille", color="green")
            pooled = stats.run_seed_variance(scored)
            errors = [stats.row_stderr(row, pooled) or 0.0 for row in scored]
            plt.error(_spread(scored), [row.fitness for row in scored], yerr=errors,
                      color="cyan")
            last = max([state.generations or 0, *(row.generation for row in scored)])
            generations = list(range(last + 1))
            plt.xticks(generations, [generation_label(g) for g in generations])
            plt.xlim(-0.5, last + 0.5)
        plt.xlabel("generation")
        self.refresh()


def _spread(rows: list[CandidateRow]) -> list[float]:
    """x positions: each candidate's generation, spread a little so that points do not overlap."""
    by_generation: dict[int, list[CandidateRow]] = {}
    for row in rows:
        by_generation.setdefault(row.generation, []).append(row)
    x = {}
    for generation, group in by_generation.items():
        for index, row in enumerate(group):
            x[row.id] = generation + 0.3 * ((index + 0.5) / len(group) - 0.5)
    return [x[row.id] for row in rows]


class LossPlot(PlotextPlot):
    """A recorded loss shape against rho, beside dpo's."""

    def draw(self, name: str, shape: RecordedShape) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        own = shape.dpo is None or name != "dpo"
        plt.title("dpo's loss (blue)" if not own else "loss: this one (orange)" + (
            ", dpo (blue)" if shape.dpo else ""))
        plt.xlabel(f"rho, beta {shape.candidate.beta:g}")
        if shape.dpo:
            plt.plot(*_finite(shape.dpo), marker="braille", color="blue+")
        if own:
            plt.plot(*_finite(shape.candidate), marker="braille", color="orange")
        self.refresh()


def _finite(shape: LossShape) -> tuple[list[float], list[float]]:
    """(rho, loss) where the loss is finite."""
    points = [(rho, loss) for rho, loss in zip(shape.rho, shape.loss, strict=True)
              if loss is not None]
    return [rho for rho, _ in points], [loss for _, loss in points]


class CandidateView(Vertical):
    """One candidate: outcome, thought, code and metrics (scrollable), its loss shape below."""

    def compose(self):
        with VerticalScroll(id="text"):
            yield Static(id="title")
            yield Static(id="outcome")
            yield Static(id="thought")
            yield Static(id="code")
            yield Static(id="metrics")
        yield Static(id="shape-message")
        yield LossPlot(id="shape")

    def show(self, row: CandidateRow | None, shape: RecordedShape | str | None) -> None:
        """Show `row`; `shape` is its loss shape, or a message saying why there is none."""
        if row is None:
            self.query_one("#title", Static).update(Text("no candidate selected", style="dim"))
            for part in ("#outcome", "#thought", "#code", "#metrics", "#shape-message"):
                self.query_one(part, Static).update("")
            self.query_one(LossPlot).display = False
            return
        self.border_title = f"{row.id} {row.name}"
        self.query_one("#title", Static).update(_title(row))
        self.query_one("#outcome", Static).update(_outcome(row))
        self.query_one("#metrics", Static).update(_metrics(row))
        self.query_one("#thought", Static).update(Text(row.thought or "(no thought given)",
                                                       style="italic"))
        self.query_one("#code", Static).update(
            Syntax(row.code or "# (no code: the untrained policy)", "python", theme="monokai",
                   line_numbers=True, word_wrap=True))
        plot = self.query_one(LossPlot)
        message = self.query_one("#shape-message", Static)
        if isinstance(shape, RecordedShape):
            message.display = False
            plot.display = True
            plot.draw(row.name, shape)
        else:
            message.display = True
            message.update(Text(shape or "", style="dim"))
            plot.display = False


def _title(row: CandidateRow) -> Text:
    text = Text.assemble((row.name, "bold"), f"   {row.id}   generation ",
                         generation_label(row.generation), "   ",
                         (row.status_text, STATUS_STYLES.get(row.status, "")))
    if row.proposer:
        text.append(f"   proposer {row.proposer}")
    if row.attempt:
        text.append(f"   attempt {row.attempt}")
    return text


def _outcome(row: CandidateRow) -> Text:
    if row.status == REJECTED:
        return Text(f"rejected at {row.stage or 'screening'}: {row.reason}", style="red")
    if row.status in EVALUATION_FAILED:
        return Text(f"{row.status}: {row.reason}", style=STATUS_STYLES[row.status])
    if row.status == TRAINING and row.loss is not None:
        return Text(f"training step {row.step}/{row.total}, loss {row.loss:.4f}")
    if row.fitness is None:
        return Text(row.status, style="dim")
    text = Text.assemble("fitness ", (format_fitness(row.fitness, row.stderr), "bold green"))
    if row.kl is not None:
        text.append(f"   KL {format_kl(row.kl)}")
    if row.cached_from:
        text.append(f"\nreused from the burn-in cache of run {row.cached_from}", style="dim")
    return text


def _metrics(row: CandidateRow) -> Text:
    """Every metric: plain values share one wrapped paragraph, each table gets its own."""
    text = Text()
    for key, value in row.metrics.items():
        if isinstance(value, dict):
            text.append(f"\n{key}: ", style="dim")
            text.append(_metric(value) + "\n")
        else:
            text.append(" · " if text.plain and not text.plain.endswith("\n") else "")
            text.append(f"{key} ", style="dim")
            text.append(_metric(value))
    text.rstrip()
    return text


def _metric(value: object) -> str:
    """A metric on one line: numbers rounded, tables flattened one level, long lists counted."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return " · ".join(f"{key} {_metric(item)}" for key, item in value.items()
                          if not isinstance(item, dict | list))
    if isinstance(value, list):
        return f"[{len(value)} items]"
    return str(value)


class LogPane(RichLog):
    """Errors, warnings, server and run events, with their time since the run started."""

    def __init__(self, **options) -> None:
        super().__init__(**options)
        self._lines: list[tuple[LogLine, float | None]] = []
        self._width = 0

    def add(self, lines: list[LogLine], start: float | None) -> None:
        self._lines.extend((line, start) for line in lines)
        if self.max_lines:
            del self._lines[:-self.max_lines]
        if self._size_known:
            for line in lines:
                self._write(line, start)

    def _write(self, line: LogLine, start: float | None) -> None:
        # Wrap at the pane's width (less a scrollbar), not at the console's.
        width = self.scrollable_content_region.width - 2
        self.write(_log_text(line, start), width=width if width > 20 else None)

    def on_resize(self, event: Resize) -> None:
        # Lines wrap at the width they were written at: write them again at the new one,
        # once RichLog has taken the new size in.
        if event.size.width != self._width:
            self._width = event.size.width
            self.call_after_refresh(self._rewrite)

    def _rewrite(self) -> None:
        if self._size_known:
            self.clear()
            for line, start in self._lines:
                self._write(line, start)


def _log_text(line: LogLine, start: float | None) -> Text:
    return Text.assemble((format_offset(line.t, start), "dim"), " ",
                         (f"{line.level:<7}", LEVEL_STYLES.get(line.level, "")), " ", line.text)

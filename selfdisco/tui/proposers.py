"""The proposers view: the current proposer, each proposer's lineage figures
(selfdisco/discovery/proposer/lineage.py) and every duel's outcome, updated live from the run's
events."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static

from selfdisco.tui.state import RunState


class ProposerPanel(Static):
    """The proposers of a run and their duels, rendered from the RunState."""

    def show(self, state: RunState) -> None:
        self.update(proposers_view(state))


def proposers_view(state: RunState) -> Group:
    current = Text.assemble("current proposer ", (state.proposer, "bold magenta"))
    table = Table(expand=True, header_style="bold")
    for column in ("proposer", "gens", "answers", "parse failed", "screen rejected",
                   "duplicate", "valid and novel", "mean fitness (best)"):
        table.add_column(column)
    for f in state.lineage():
        span = f"{min(f.generations)}-{max(f.generations)}" if len(f.generations) > 1 \
            else str(f.generations[0])
        style = "bold magenta" if f.proposer == state.proposer else ""
        table.add_row(f.proposer, span, str(f.answers), f.rate("parse").text(),
                      f.rate("screen").text(), f.rate("duplicate").text(),
                      f.valid_novel.text(), f.fitness_text(), style=style)
    duels = Text("duels\n", style="bold")
    if not state.duels:
        duels.append("none yet: a challenger proposer duels the current one after a generation "
                     "(discovery.self_improve)", style="dim")
    for d in state.duels:
        promoted = bool(d.get("promoted"))
        duels.append(f"after generation {d.get('generation')}: {d.get('challenger')} "
                     f"{d.get('challenger_valid')}/{d.get('samples')} vs {d.get('current')} "
                     f"{d.get('current_valid')}/{d.get('samples')} valid and novel: ")
        duels.append("promoted" if promoted else "not promoted",
                     style="bold green" if promoted else "bold red")
        duels.append(f" ({d.get('reason')})\n")
    return Group(current, Text(""), table, Text(""), duels)


class ProposersScreen(Screen):
    """The proposers view on the whole screen; updates live."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back"),
                Binding("l", "app.pop_screen", "back", show=False)]

    def compose(self) -> ComposeResult:
        yield ProposerPanel(id="proposers-view")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(ProposerPanel).show(self.app.state)

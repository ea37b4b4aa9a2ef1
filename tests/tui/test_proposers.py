"""The TUI's proposers view, driven headless by Pilot while events arrive: the current proposer,
its lineage figures and each duel's outcome."""

from __future__ import annotations

import asyncio
import html
import re

from test_app import SIZE, wait_for

from selfdisco.rundir.events import EventWriter
from selfdisco.tui.app import DiscoApp
from selfdisco.tui.proposers import ProposersScreen

CODE = "def loss_fn(a, b, c, d, beta):\n    return a\n"


def screen_text(app: DiscoApp) -> str:
    """The screen's text, from Textual's SVG screenshot."""
    svg = app.export_screenshot()
    text = html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())  # without box drawing


def propose(events: EventWriter, id: str, generation: int, proposer: str,
            rejected: str | None = None, fitness: float | None = None) -> None:
    events.emit("candidate_proposed", id=id, generation=generation, name=id, thought="",
                code=CODE, proposer=proposer, attempt=0)
    if rejected:
        events.emit("candidate_rejected", id=id, stage=rejected, reason="why")
    if fitness is not None:
        events.emit("candidate_scored", id=id, fitness=fitness, stderr=0.01, metrics={})


def first_generation(events: EventWriter) -> None:
    events.emit("run_started", run_id="run", task="sentiment", preset="smoke", proposer="local",
                generations=2, candidates_per_generation=2, notes=[])
    events.emit("generation_started", generation=1)
    propose(events, "g01-c1", 1, "base", rejected="parse")
    propose(events, "g01-c1-r1", 1, "base", fitness=0.30)
    propose(events, "g01-c2", 1, "base", rejected="duplicate")
    propose(events, "g01-c2-r1", 1, "base", fitness=0.50)


def test_the_proposers_view_follows_lineage_and_duels_live(tmp_path):
    events = EventWriter(tmp_path)
    first_generation(events)

    async def scenario():
        app = DiscoApp(tmp_path, poll_interval=0.01, clock=lambda: 0.0)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.state.seq == events._seq, "the first events")
            await pilot.press("l")
            await wait_for(pilot, lambda: isinstance(app.screen, ProposersScreen), "the view")
            await pilot.pause()
            before = screen_text(app)
            # the duel and the promotion arrive while the view is open
            events.emit("proposer_duel", generation=1, current="base", challenger="g01-c2-r1",
                        samples=4, current_valid=1, challenger_valid=3, difference=0.5,
                        stderr=0.29, promoted=True, reason="valid-and-novel rate higher")
            events.emit("proposer_changed", proposer="g01-c2-r1",
                        adapter="candidates/g01-c2-r1/adapter", fitness=0.5)
            events.emit("generation_started", generation=2)
            propose(events, "g02-c1", 2, "g01-c2-r1", fitness=0.55)
            await wait_for(pilot, lambda: app.state.seq == events._seq, "the duel")
            await pilot.pause()
            after = screen_text(app)
            await pilot.press("escape")
            await pilot.pause()
            back = not isinstance(app.screen, ProposersScreen)
        return before, after, back

    before, after, back = asyncio.run(scenario())
    assert "current proposer base" in before
    # base: 4 answers, 1 unparsable, 1 duplicate, 2 valid and novel, fitness 0.3 and 0.5
    assert "base 1 4 0.25 ± 0.22 (1/4) 0.00 ± 0.00 (0/4) 0.25 ± 0.22 (1/4)" in before
    assert "0.50 ± 0.25 (2/4) 0.4000 ± 0.1000 (n 2), best 0.5000" in before
    assert "none yet" in before
    assert "current proposer g01-c2-r1" in after
    assert "g01-c2-r1 2 1 0.00 ± 0.00 (0/1)" in after
    assert "after generation 1: g01-c2-r1 3/4 vs base 1/4 valid and novel: promoted" in after
    assert back

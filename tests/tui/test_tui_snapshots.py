"""Snapshots of the TUI's screens over the recorded run (update with --snapshot-update).

Time is frozen: the header's elapsed time and estimate come from a clock fixed at the last
event, and log lines show their offset from the run's start.
"""

from __future__ import annotations

from test_app import MID_RUN, SIZE, loaded, make_app, wait_for
from test_tui_data import recorded_lines


def before(lines):
    async def run_before(pilot) -> None:
        await loaded(pilot, lines)
        await wait_for(pilot, lambda: not pilot.app.shapes_pending, "loss shapes")
        await pilot.pause()

    return run_before


def test_main_screen_of_a_finished_run(snap_compare, tmp_path):
    lines = recorded_lines()
    app = make_app(tmp_path, lines, shapes=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=before(lines))


def test_main_screen_during_a_run(snap_compare, tmp_path):
    app = make_app(tmp_path, MID_RUN, shapes=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=before(MID_RUN))


def test_detail_screen(snap_compare, tmp_path):
    lines = recorded_lines()
    app = make_app(tmp_path, lines, shapes=True)

    async def run_before(pilot) -> None:
        await before(lines)(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: not pilot.app.shapes_pending, "loss shapes")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_filtered_table(snap_compare, tmp_path):
    lines = recorded_lines()
    app = make_app(tmp_path, lines, shapes=True)

    async def run_before(pilot) -> None:
        await before(lines)(pilot)
        pilot.app.query_one("#filter").cursor_blink = False  # a blinking cursor is not stable
        await pilot.press("slash", *"scored")
        await wait_for(pilot, lambda: not pilot.app.shapes_pending, "loss shapes")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_closing_the_tui_of_a_run_it_started(snap_compare, tmp_path):
    from selfdisco.tui.app import CloseRunScreen

    app = make_app(tmp_path, MID_RUN, owns_run=True, shapes=True)

    async def run_before(pilot) -> None:
        await before(MID_RUN)(pilot)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, CloseRunScreen), "question")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)

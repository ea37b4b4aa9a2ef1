"""The Textual app, driven headless by Pilot over the recorded event log."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from test_tui_data import recorded_lines

from selfdisco.rundir.control import ControlReader
from selfdisco.rundir.shape import GRID
from selfdisco.tui.app import CloseRunScreen, DetailScreen, DiscoApp
from selfdisco.tui.widgets import COLUMNS, CandidatesTable, CandidateView

SIZE = (160, 48)
WAIT_S = 180.0  # generous (the machine may be busy): only reached when something is broken


async def wait_for(pilot, condition, what: str) -> None:
    """Let the app run until condition() holds."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await pilot.pause(0.01)


def make_app(run_dir, lines: list[str], shapes: bool = False, **options) -> DiscoApp:
    """The app on an event log; with `shapes`, beside an archive holding the loss shapes that
    screening would have recorded for its candidates."""
    (run_dir / "events.jsonl").write_text("".join(lines))
    if shapes:
        record_shapes(run_dir, lines)
    last_t = float(json.loads(lines[-1])["t"]) if lines else 0.0
    options.setdefault("clock", lambda: last_t + 5)
    return DiscoApp(run_dir, poll_interval=0.01, **options)


SCREENED: dict[str, dict | None] = {}  # code -> its recorded shape (screened once per session)


def record_shapes(run_dir, lines: list[str], beta: float = 0.05) -> None:
    """Screen each proposed candidate's code in the sandbox and store the shapes, and dpo's as
    the reference, in the run's archive, as the loop does."""
    from selfdisco.losses import Candidate, catalog, screen
    from selfdisco.rundir.archive import REFERENCE_SHAPE, Archive

    def shape(code: str) -> dict | None:
        if code not in SCREENED:
            result = screen(Candidate("", "candidate", code), beta=beta)
            SCREENED[code] = result.shape.to_dict() if result.ok else None
        return SCREENED[code]

    archive = Archive(run_dir)
    for event in map(json.loads, lines):
        if event["type"] == "candidate_proposed" and event["code"]:
            archive.add(event["id"], event["generation"], "proposal", "proposed",
                        shape=shape(event["code"]))
    archive.set_meta(REFERENCE_SHAPE, shape(catalog.get("dpo").candidate.code))
    archive.close()


async def loaded(pilot, lines: list[str]) -> None:
    seq = json.loads(lines[-1])["seq"]
    await wait_for(pilot, lambda: pilot.app.state.seq == seq, f"event {seq}")
    await pilot.pause()


def table_rows(app: DiscoApp) -> list[tuple[str, str]]:
    table = app.query_one("#candidates", CandidatesTable)
    return [(str(table.get_row(key)[0]), table.get_row(key)[3].plain) for key in table.rows]


def upto(predicate) -> list[str]:
    lines = []
    for line in recorded_lines():
        lines.append(line)
        if predicate(json.loads(line)):
            return lines
    raise AssertionError("no such event")


MID_RUN = upto(lambda e: e["type"] == "training_progress" and e["id"] == "g01-c3"
               and e["step"] == 6)


def test_rows_appear_and_update_in_order(tmp_path):
    """Lines appended one at a time while the app runs show up in the table in log order."""
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, [])
        seen_status: list[str] = []
        first_seen: list[str] = []
        async with app.run_test(size=SIZE) as pilot:
            for line in lines:
                with open(tmp_path / "events.jsonl", "a") as handle:
                    handle.write(line)
                await loaded(pilot, [line])
                rows = dict(table_rows(app))
                first_seen.extend(key for key in rows if key not in first_seen)
                if "g01-c3" in rows:
                    status = rows["g01-c3"].split()[0]
                    if not seen_status or seen_status[-1] != status:
                        seen_status.append(status)
                # The table always shows exactly what the state holds.
                assert {k: v for k, v in rows.items()} == \
                    {key: row.status_text for key, row in app.state.candidates.items()}
            final = [key for key, _ in table_rows(app)]
        return seen_status, first_seen, final

    seen_status, first_seen, final = asyncio.run(scenario())
    assert seen_status == ["proposed", "training", "scoring", "scored"]
    assert first_seen == ["base", "burn-dpo", "burn-hinge", "burn-ipo", "g01-c1", "g01-c1-r1",
                          "g01-c2", "g01-c2-r1", "g01-c3", "g02-c1", "g02-c2", "g02-c3"]
    assert final == ["g02-c3", "g01-c3", "g01-c1-r1", "g02-c1", "burn-dpo", "burn-hinge",
                     "burn-ipo", "base", "g01-c1", "g01-c2", "g01-c2-r1", "g02-c2"]


def test_training_progress_updates_in_place(tmp_path):
    async def scenario():
        app = make_app(tmp_path, MID_RUN)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, MID_RUN)
            before = dict(table_rows(app))["g01-c3"]
            seen_before = app.state.events_seen
            extra = upto(lambda e: e["type"] == "training_progress" and e["id"] == "g01-c3"
                         and e["step"] == 9)[len(MID_RUN):]
            with open(tmp_path / "events.jsonl", "a") as handle:
                handle.writelines(extra)
            await loaded(pilot, extra)
            return before, dict(table_rows(app))["g01-c3"], app.state.events_seen - seen_before

    before, after, events_seen = asyncio.run(scenario())
    assert (before, after) == ("training 6/12", "training 9/12")
    # Appended in one go, the three progress events of g01-c3 reach the state as one.
    assert events_seen == 1


def test_cells_updated_in_place_widen_their_column(tmp_path):
    scored = upto(lambda e: e["type"] == "candidate_scored" and e["id"] == "base")
    before, line = scored[:-1], scored[-1:]

    async def scenario():
        app = make_app(tmp_path, before)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, before)
            table = app.query_one("#candidates", CandidatesTable)
            order = list(table.rows)
            with open(tmp_path / "events.jsonl", "a") as handle:
                handle.writelines(line)
            await loaded(pilot, line)
            assert list(table.rows) == order  # the row stayed where it was: updated in place
            return {str(column.key.value): (column.content_width, max(
                len(getattr(cell, "plain", str(cell))) for cell in table.get_column(column.key)))
                for column in table.columns.values()}

    widths = asyncio.run(scenario())
    assert set(widths) == {key for _, key in COLUMNS}
    assert widths["fitness"][1] >= len("0.1412 ± 0.0301")  # base's score, written in place
    for key, (width, widest) in widths.items():
        assert width >= widest, key


def test_selection_shows_the_code_and_enter_opens_the_detail(tmp_path):
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, lines)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            view = app.query_one("#selected", CandidateView)
            first = view.query_one("#code").content.code
            await pilot.press("down", "down")
            await pilot.pause()
            third_key = app.query_one("#candidates", CandidatesTable).selected_key
            third = view.query_one("#code").content.code
            outcome = view.query_one("#outcome").content.plain
            outcome += "\n" + view.query_one("#metrics").content.plain
            await pilot.press("enter")
            await wait_for(pilot, lambda: isinstance(app.screen, DetailScreen), "detail")
            await pilot.pause()
            detail = app.screen.query_one(CandidateView)
            detail_code = detail.query_one("#code").content.code
            detail_key = app.screen.key
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, DetailScreen), "back")
        return first, third_key, third, outcome, detail_key, detail_code

    first, third_key, third, outcome, detail_key, detail_code = asyncio.run(scenario())
    from test_tui_data import ADAPTIVE, BLEND

    assert first == ADAPTIVE.replace("0.7 *", "0.8 *").replace("0.3 *", "0.2 *")  # g02-c3
    assert third_key == "g01-c1-r1" and third == BLEND
    assert outcome.startswith("fitness 0.2411 ± 0.0304   KL 0.463\n")  # formatting.format_kl
    assert " kl 0.463 · " in outcome and "\ntrain: train_loss 0.5874 · " in outcome
    assert (detail_key, detail_code) == ("g01-c1-r1", BLEND)


def test_rejected_candidate_shows_its_reason(tmp_path):
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, lines)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            await pilot.press("slash", *"rejected", "enter")
            await pilot.pause()
            view = app.query_one("#selected", CandidateView)
            return (app.query_one("#candidates", CandidatesTable).selected_key,
                    view.query_one("#outcome").content.plain)

    key, outcome = asyncio.run(scenario())
    assert key == "g01-c1"
    assert outcome == "rejected at screen: line 2: 'import' is not allowed; use torch, F and " \
                      "math only"


def test_filter_by_name_and_clear(tmp_path):
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, lines)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            await pilot.press("slash", *"hinge")
            await pilot.pause()
            filtered = [key for key, _ in table_rows(app)]
            typed_q_kept_app = app.is_running
            await pilot.press("escape")
            await pilot.pause()
            return filtered, typed_q_kept_app, [key for key, _ in table_rows(app)]

    filtered, running, cleared = asyncio.run(scenario())
    assert filtered == ["g02-c3", "g01-c3", "burn-hinge"]
    assert running
    assert len(cleared) == 12


def test_p_and_s_append_to_the_control_file(tmp_path):
    async def scenario():
        app = make_app(tmp_path, MID_RUN)
        reader = ControlReader(tmp_path)
        sent = []
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, MID_RUN)
            await pilot.press("p")
            sent.append(reader.poll())
            await pilot.press("p")
            sent.append(reader.poll())
            await pilot.press("p")
            sent.append(reader.poll())
            # The loop obeys the pause: from then on p means resume.
            obeyed = '{"v": 1, "seq": 9999, "t": 0, "type": "control", "command": "pause"}\n'
            with open(tmp_path / "events.jsonl", "a") as handle:
                handle.write(obeyed)
            await loaded(pilot, [obeyed])
            await pilot.press("p")
            sent.append(reader.poll())
            await pilot.press("s")
            sent.append(reader.poll())
        return sent

    assert asyncio.run(scenario()) == [["pause"], ["resume"], ["pause"], ["resume"], ["stop"]]


def test_keys_do_not_steer_a_finished_run(tmp_path):
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, lines)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            await pilot.press("p", "s")
            await pilot.pause()
        return (tmp_path / "control.jsonl").exists()

    assert asyncio.run(scenario()) is False


def test_footer_lists_the_keys(tmp_path):
    async def scenario():
        app = make_app(tmp_path, MID_RUN)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, MID_RUN)
            return {(binding.key, binding.description)
                    for binding in (b.binding for b in app.screen.active_bindings.values())
                    if binding.show}

    shown = asyncio.run(scenario())
    assert {("q", "quit"), ("p", "pause/resume"), ("s", "stop after generation"),
            ("slash", "filter"), ("enter", "detail")} <= shown


def test_q_quits_an_attached_tui(tmp_path):
    async def scenario():
        app = make_app(tmp_path, MID_RUN)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, MID_RUN)
            await pilot.press("q")
            await pilot.pause()
        return app.return_value

    assert asyncio.run(scenario()) == "detach"


@pytest.mark.parametrize(("keys", "expected"), [(("s",), "stop"), (("l",), "detach"),
                                                (("escape", "q", "l"), "detach")])
def test_closing_an_owned_run_asks_whether_to_stop_it(tmp_path, keys, expected):
    async def scenario():
        app = make_app(tmp_path, MID_RUN, owns_run=True)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, MID_RUN)
            await pilot.press("q")
            await wait_for(pilot, lambda: isinstance(app.screen, CloseRunScreen), "question")
            for key in keys:
                await pilot.press(key)
                await pilot.pause()
        return app.return_value

    assert asyncio.run(scenario()) == expected
    assert not (tmp_path / "control.jsonl").exists()


def test_the_recorded_loss_shape_is_read_off_the_ui_thread_and_shown(tmp_path):
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, lines, shapes=True)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            await wait_for(pilot, lambda: "g02-c3" in app.shapes, "the shape of g02-c3")
            await pilot.pause()
            view = app.query_one("#selected", CandidateView)
            plot_shown = view.query_one("#shape").display
            await pilot.press("slash", *"rejected", "enter")
            await pilot.pause()
            message = view.query_one("#shape-message").content.plain
            return plot_shown, view.query_one("#shape").display, message, app.shapes["g02-c3"]

    plot_shown, plot_after, message, (_, shape) = asyncio.run(scenario())
    assert plot_shown and not plot_after
    assert message == "no loss shape: rejected at screening"
    assert shape.candidate.rho == shape.dpo.rho and len(shape.candidate.loss) == len(GRID)


def test_a_run_without_recorded_shapes_says_so(tmp_path):
    lines = recorded_lines()

    async def scenario():
        app = make_app(tmp_path, lines)  # no archive: a run from before shapes were recorded
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            await wait_for(pilot, lambda: "g02-c3" in app.shapes, "the read of g02-c3")
            await pilot.pause()
            view = app.query_one("#selected", CandidateView)
            return view.query_one("#shape").display, \
                view.query_one("#shape-message").content.plain

    assert asyncio.run(scenario()) == (False, "no loss shape recorded (runs before shapes were "
                                              "recorded at screening have none)")


def test_a_run_process_that_dies_is_reported_and_closing_does_not_ask(tmp_path):
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()

    async def scenario():
        app = make_app(tmp_path, MID_RUN, owns_run=True, process=process)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, MID_RUN)
            await wait_for(pilot, lambda: app.process_ended, "the process check")
            await pilot.pause()
            log = app.query_one("#log")
            text = "\n".join(line.text for line in log.lines)
            await pilot.press("q")
            await pilot.pause()
        return text, app.return_value

    text, result = asyncio.run(scenario())
    assert "the run's process ended (exit code 3) before the run finished" in text
    assert result == "detach"


def test_long_names_are_cut_in_the_table_and_whole_in_the_detail(tmp_path):
    name = "blended_logistic_exponential_with_an_adaptive_margin_v12"
    line = json.dumps({"v": 1, "seq": 1, "t": 1.0, "type": "candidate_proposed", "id": "g01-c1",
                       "generation": 1, "name": name, "thought": "", "code": "",
                       "proposer": "base", "attempt": 0}) + "\n"

    async def scenario():
        app = make_app(tmp_path, [line])
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, [line])
            cell = app.query_one("#candidates", CandidatesTable).get_row("g01-c1")[2]
            title = app.query_one("#selected", CandidateView).query_one("#title").content.plain
        return cell, title

    cell, title = asyncio.run(scenario())
    assert len(cell) == 30 and cell.endswith("…") and name.startswith(cell[:-1])
    assert title.startswith(name)


def test_header_says_when_a_run_stopped_or_went_quiet(tmp_path):
    quiet_for = 3600

    async def scenario(lines, now):
        app = make_app(tmp_path, lines, clock=lambda: now)
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot, lines)
            return app.query_one("#header").content.renderables[1].plain

    last_t = json.loads(MID_RUN[-1])["t"]
    quiet = asyncio.run(scenario(MID_RUN, last_t + quiet_for))
    assert "no news for 1h00m" in quiet
    stopped = MID_RUN + [json.dumps({"v": 1, "seq": 999, "t": last_t + 1, "type": "server",
                                     "state": "stopped", "detail": ""}) + "\n"]
    text = asyncio.run(scenario(stopped, last_t + 2))
    assert "stopped before finishing" in text and "left -" in text
    assert f"continue it with: selfdisco resume {tmp_path}" in text

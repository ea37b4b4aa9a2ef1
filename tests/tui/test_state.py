"""The TUI's pure-Python parts: the run state folded from events, the feed, run directories."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_tui_data import RECORDED_RUN, recorded_lines

from selfdisco.formatting import format_duration, format_offset
from selfdisco.rundir.events import EventWriter, read_events
from selfdisco.tui.feed import EventFeed, coalesce
from selfdisco.tui.rundir import config_value
from selfdisco.tui.state import RunState


def recorded_events() -> list[dict]:
    return list(read_events(RECORDED_RUN))


def prefix_until(predicate) -> list[dict]:
    """The recorded events up to and including the first that satisfies predicate."""
    events = []
    for event in recorded_events():
        events.append(event)
        if predicate(event):
            return events
    raise AssertionError("no such event in the recorded run")


def test_finished_run_state():
    state = RunState.from_events(recorded_events())
    assert (state.run_id, state.task, state.preset) == ("demo-sentiment-cpu", "sentiment", "cpu")
    assert state.finished and state.finish_reason == "generation limit reached"
    assert state.proposer == "g02-c3" and state.best_id == "g02-c3"
    assert state.candidates["base"].kl == 0.0
    statuses = {key: row.status for key, row in state.candidates.items()}
    assert statuses == {
        "base": "scored", "burn-dpo": "scored", "burn-hinge": "scored", "burn-ipo": "scored",
        "g01-c1": "rejected", "g01-c1-r1": "scored", "g01-c2": "rejected", "g01-c2-r1": "diverged",
        "g01-c3": "scored", "g02-c1": "scored", "g02-c2": "failed", "g02-c3": "scored",
    }
    assert state.candidates["g01-c1"].stage == "screen"
    assert "import" in state.candidates["g01-c1"].reason
    assert state.candidates["g01-c2-r1"].step == 5
    assert state.candidates["g01-c3"].kl == pytest.approx(0.497)
    assert state.best().id == "g02-c3"
    # Best first by fitness; candidates without a fitness follow in the order they arrived.
    assert [row.id for row in state.rows()] == [
        "g02-c3", "g01-c3", "g01-c1-r1", "g02-c1", "burn-dpo", "burn-hinge", "burn-ipo", "base",
        "g01-c1", "g01-c2", "g01-c2-r1", "g02-c2"]
    assert state.best_so_far() == {0: 0.2265, 1: 0.2528, 2: 0.2603}
    assert state.eta(now=state.last_t + 100) is None
    # A finished run's elapsed time stops at its end, whatever the clock says.
    assert state.elapsed(now=state.last_t + 1e6) == pytest.approx(
        state.finished_t - state.started_t)
    assert not state.paused and not state.stop_requested


def test_log_lines_keep_errors_and_server_events():
    state = RunState.from_events(recorded_events())
    texts = [(line.level, line.text) for line in state.log]
    assert ("error", "g02-c2 asymmetric_dpo failed: the evaluation process died (killed by "
            "signal 9) without a result; see worker.log") in texts
    assert ("info", "server restarted: after a crash") in texts
    assert ("warning", "g01-c2-r1 exponential_ratio diverged: diverged at step 5: loss is "
            "inf") in texts
    assert any(level == "warning" and "max_tokens" in text for level, text in texts)
    assert ("info", "proposer is now g01-c3 (fitness 0.2528)") in texts


def test_filter_matches_name_or_status():
    state = RunState.from_events(recorded_events())
    assert {row.id for row in state.rows("HINGE")} == {"burn-hinge", "g01-c3", "g02-c3"}
    assert {row.id for row in state.rows("rejected")} == {"g01-c1", "g01-c2"}
    assert len(state.rows("")) == len(state.candidates)


def test_mid_run_state_shows_progress_pause_and_estimate():
    events = prefix_until(lambda e: e["type"] == "training_progress" and e["id"] == "g01-c3"
                          and e["step"] == 6)
    state = RunState.from_events(events)
    row = state.candidates["g01-c3"]
    assert row.status == "training" and row.status_text == "training 6/12"
    assert row.loss == pytest.approx(0.9125 * 0.97 ** 6, abs=1e-5)
    assert state.stage["stage"] == "evaluate"
    assert state.generation == 1 and not state.finished
    assert state.server_state == "restarted"
    # No discovery generation has finished: the pace of the six candidates evaluated so far
    # (burn-in included), times what is left: g01-c3 and the three of generation 2.
    start = next(e["t"] for e in events if e["type"] == "candidate_status")
    finished = [e["t"] for e in events if e["type"] in ("candidate_scored", "candidate_diverged",
                                                        "candidate_failed")]
    now = state.last_t + 10
    pace = max((finished[-1] - start) / 6, (now - start) / 7)
    assert len(finished) == 6
    assert state.eta(now) == pytest.approx(pace * 4 - min(now - finished[-1], pace))
    # Long after the last candidate finished, the one in hand sets a slower pace.
    later = finished[-1] + 3600
    assert state.eta(later) == pytest.approx((later - start) / 7 * 3)


def test_estimate_during_burn_in():
    before = RunState.from_events(prefix_until(
        lambda e: e["type"] == "candidate_status" and e["id"] == "base"))
    assert before.eta(before.last_t) is None  # nothing evaluated yet: no pace to go by
    events = prefix_until(lambda e: e["type"] == "candidate_scored" and e["id"] == "base")
    state = RunState.from_events(events)
    # One of four burn-in rows evaluated; three left, then 2 generations x 3 candidates.
    pace = events[-1]["t"] - next(e["t"] for e in events if e["type"] == "candidate_status")
    assert state.eta(events[-1]["t"]) == pytest.approx(pace * (3 + 6))


def test_estimate_after_a_generation_is_its_duration():
    events = prefix_until(lambda e: e["type"] == "generation_started" and e["generation"] == 2)
    state = RunState.from_events(events)
    start, end = state.generation_times[1]
    assert state.eta(now=events[-1]["t"]) == pytest.approx(end - start)


def test_pause_and_stop_follow_control_events():
    paused = RunState.from_events(prefix_until(
        lambda e: e["type"] == "control" and e["command"] == "pause"))
    assert paused.paused
    resumed = RunState.from_events(prefix_until(
        lambda e: e["type"] == "control" and e["command"] == "resume"))
    assert not resumed.paused
    resumed.apply({"type": "control", "command": "stop", "t": resumed.last_t + 1})
    assert resumed.stop_requested
    paused.apply({"type": "control", "command": "stop", "t": paused.last_t + 1})
    assert paused.stop_requested and not paused.paused  # as the loop: a stop ends the pause


def test_resume_requeues_candidates_in_flight():
    events = prefix_until(lambda e: e["type"] == "training_progress" and e["id"] == "g02-c3")
    state = RunState.from_events(events)
    assert state.candidates["g02-c3"].status == "training"
    state.apply({"v": 1, "seq": 999, "t": events[-1]["t"] + 60, "type": "run_resumed",
                 "run_id": "demo-sentiment-cpu", "requeued": ["g02-c3"]})
    row = state.candidates["g02-c3"]
    assert row.status == "proposed" and row.step is None
    assert "g02-c3" in state.take_changes()[0]


def test_events_about_unknown_candidates_make_a_placeholder_row():
    state = RunState()
    state.apply({"type": "candidate_status", "id": 7, "status": "training", "t": 1.0})
    assert state.candidates["7"].status == "training" and state.candidates["7"].name == "?"
    state.apply({"type": "no_such_event", "t": 2.0})
    assert state.events_seen == 2


def test_take_changes_reports_each_change_once():
    state = RunState()
    events = recorded_events()
    for event in events[:8]:
        state.apply(event)
    changed, lines = state.take_changes()
    assert "base" in changed and lines
    assert state.take_changes() == (set(), [])


def test_coalescing_keeps_the_final_state():
    events = recorded_events()
    kept = coalesce(events)
    assert len(kept) < len(events)
    progress = [e for e in kept if e["type"] == "training_progress"]
    trained = {e["id"] for e in events if e["type"] == "training_progress"}
    assert len(trained) >= 3
    assert sorted(e["id"] for e in progress) == sorted(trained)  # one per candidate: its last
    assert all(e == max((f for f in events if f["type"] == "training_progress"
                         and f["id"] == e["id"]), key=lambda f: f["seq"]) for e in progress)
    full, short = RunState.from_events(events), RunState.from_events(kept)
    assert [(r.id, r.status, r.step, r.fitness) for r in full.rows()] == \
        [(r.id, r.status, r.step, r.fitness) for r in short.rows()]
    # Everything else passes through, in order.
    others = [e["seq"] for e in events if e["type"] != "training_progress"]
    assert [e["seq"] for e in kept if e["type"] != "training_progress"] == others


def test_feed_follows_a_growing_log_and_waits_for_torn_lines(tmp_path):
    feed = EventFeed(tmp_path)
    assert feed.read() == 0 and feed.drain() == []
    lines = recorded_lines()
    with open(tmp_path / "events.jsonl", "w") as handle:
        handle.writelines(lines[:3])
        handle.write(lines[3][:20])
        handle.flush()
        assert feed.read() == 3
        handle.write(lines[3][20:])
        handle.flush()
        assert feed.read() == 1
    assert [e["seq"] for e in feed.drain()] == [1, 2, 3, 4]
    assert feed.drain() == []


def test_feed_reads_what_an_event_writer_appends(tmp_path):
    feed = EventFeed(tmp_path)
    writer = EventWriter(tmp_path)
    writer.emit("log", level="info", message="one")
    writer.emit("training_progress", id="a", step=1, total=3, loss=0.7)
    writer.emit("training_progress", id="a", step=2, total=3, loss=0.6)
    assert feed.read() == 3
    drained = feed.drain()
    assert [e["type"] for e in drained] == ["log", "training_progress"]
    assert drained[-1]["step"] == 2


def test_formats():
    assert format_duration(None) == "-"
    assert format_duration(7.4) == "7s"
    assert format_duration(245) == "4m05s"
    assert format_duration(3720) == "1h02m"
    assert format_offset(1000.0 + 3725, 1000.0) == "+01:02:05"


def test_config_value_looks_into_tables():
    config = {"preset": "cpu", "task": {"name": "sentiment"},
              "train": {"overrides": {"beta": 0.1}}}
    assert config_value(config, "preset") == "cpu"
    assert config_value(config, "beta") == 0.1
    assert config_value(config, "missing") is None


def test_tui_command_without_events_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "selfdisco", "tui", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "has no events.jsonl" in result.stderr and "Traceback" not in result.stderr


def test_tui_command_needs_a_terminal(tmp_path):
    (tmp_path / "events.jsonl").write_text(recorded_lines()[0])
    result = subprocess.run([sys.executable, "-m", "selfdisco", "tui", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "interactive terminal" in result.stderr


def test_state_feed_and_package_import_no_textual():
    code = ("import sys, json; import selfdisco.tui, selfdisco.tui.state, selfdisco.tui.feed, "
            "selfdisco.tui.shapes, selfdisco.tui.rundir; "
            "print(json.dumps(sorted(m for m in ('textual', 'torch') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert json.loads(result.stdout) == [], result.stderr


def test_proposer_starts_as_base_and_nan_kl_is_not_shown():
    state = RunState()
    state.apply({"type": "run_started", "run_id": "r", "task": "sentiment", "preset": "smoke",
                 "proposer": "local", "generations": 1, "candidates_per_generation": 1,
                 "t": 1.0})
    assert state.proposer == "base"
    state.apply({"type": "candidate_scored", "id": "x", "fitness": 0.1, "stderr": 0.01,
                 "metrics": {"kl": float("nan")}, "t": 2.0})
    assert state.candidates["x"].kl is None


def test_a_run_that_stopped_its_server_without_finishing_is_interrupted():
    events = prefix_until(lambda e: e["type"] == "training_progress" and e["id"] == "g01-c3")
    state = RunState.from_events(events)
    last = events[-1]["t"]
    state.apply({"type": "server", "state": "stopped", "detail": "", "t": last + 1})
    assert state.interrupted and not state.finished
    assert state.eta(last + 100) is None
    assert state.elapsed(last + 1e6) == pytest.approx(last + 1 - state.started_t)
    state.apply({"type": "run_resumed", "run_id": "demo-sentiment-cpu", "requeued": ["g01-c3"],
                 "t": last + 500})
    assert not state.interrupted

import json
import re

import pytest

from selfdisco.discovery.prompt import Entry, build_messages, candidate_schema, select_history
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.control import ControlReader, send
from selfdisco.rundir.events import EventTail, EventWriter, read_events
from selfdisco.seeds import derive


def test_archive_survives_reopening_and_requeues(tmp_path):
    archive = Archive(tmp_path)
    archive.add("a", 1, "proposal", "scored", fitness=0.5, metrics={"kl": 0.1})
    archive.add("b", 1, "proposal", "training", name="b")
    archive.add("c", 1, "proposal", "rejected", reason="bad")
    archive.close()
    again = Archive(tmp_path)
    assert [r.id for r in again.rows()] == ["a", "b", "c"]
    assert again.get("a").metrics == {"kl": 0.1}
    assert again.requeue_unfinished() == ["b"]
    assert again.get("b").status == "proposed"
    assert again.best().id == "a"
    with pytest.raises(ValueError, match="unknown candidate status 'done'"):
        again.update("a", status="done")
    with pytest.raises(ValueError, match="unknown candidate status"):
        again.add("d", 1, "proposal", "queued")


def test_event_log_is_append_only_and_tolerates_a_torn_line(tmp_path):
    writer = EventWriter(tmp_path)
    writer.emit("log", level="info", message="one")
    tail = EventTail(tmp_path / "events.jsonl")
    assert [e["message"] for e in tail.poll()] == ["one"]
    with open(tmp_path / "events.jsonl", "a") as handle:
        handle.write('{"v": 1, "seq": 2, "type": "log", "mess')  # a writer mid-line
    assert tail.poll() == []
    assert len(list(read_events(tmp_path / "events.jsonl"))) == 1
    with open(tmp_path / "events.jsonl", "a") as handle:
        handle.write('age": "two"}\n')
    assert [e["message"] for e in tail.poll()] == ["two"]
    assert EventWriter(tmp_path).emit("log", level="info", message="three")["seq"] == 3


@pytest.mark.parametrize(("kind", "fields", "says"), [
    ("log", {"level": "info"}, "missing field(s) message"),
    ("log", {"level": "info", "message": "m", "extra": 1}, "unknown field(s) extra"),
    ("candidate_scored", {"id": "a", "fitness": "0.5", "stderr": None, "metrics": {}},
     "field 'fitness' is '0.5', not int | float"),
    ("candidate_status", {"id": "a", "status": "scored"}, "not one of training, scoring"),
    ("log", {"level": "loud", "message": "m"}, "not one of info, warning, error"),
    ("candidate_tickled", {"id": "a"}, "unknown event type 'candidate_tickled'"),
])
def test_emit_refuses_an_event_that_does_not_fit_its_type(tmp_path, kind, fields, says):
    writer = EventWriter(tmp_path)
    with pytest.raises(ValueError, match=re.escape(says)):
        writer.emit(kind, **fields)
    assert list(read_events(tmp_path / "events.jsonl")) == []  # nothing was written
    # Fields that may have no value are declared so: None is accepted there.
    writer.emit("candidate_diverged", id="a", step=None, reason=None)
    assert [e["type"] for e in read_events(tmp_path / "events.jsonl")] == ["candidate_diverged"]


def test_control_commands_reach_the_reader(tmp_path):
    reader = ControlReader(tmp_path)
    send(tmp_path, "pause")
    send(tmp_path, "stop")
    assert reader.poll() == ["pause", "stop"]
    assert reader.poll() == []


def test_history_keeps_best_and_recent_when_over_budget():
    entries = [Entry(order=i, answer="x" * 700, feedback="Fitness: 1", fitness=float(f))
               for i, f in enumerate([5, 1, 9, 2, 3, 4, 0, 8])]
    kept, omitted = select_history(entries, budget=10_000, keep_best=2, keep_recent=2)
    assert omitted == 0 and kept == entries
    kept, omitted = select_history(entries, budget=500, keep_best=2, keep_recent=2)
    assert [e.order for e in kept] == [2, 6, 7]  # best: 2 (9) and 7 (8); recent: 6 and 7
    assert omitted == 5
    messages = build_messages("sys", "burn", entries, budget=500, keep_best=2, keep_recent=2)
    assert "5 earlier candidates are left out" in messages[1]["content"]
    assert [m["role"] for m in messages] == ["system", "user"] + ["assistant", "user"] * 3


def test_seeds_are_stable_and_distinct():
    assert derive(0, "propose", 1) == derive(0, "propose", 1)
    assert len({derive(0, "propose", g) for g in range(100)}) == 100
    assert derive(0, "train") != derive(1, "train")


def test_free_schema_is_valid_json_schema():
    schema = candidate_schema()
    json.dumps(schema)
    assert schema["required"] == ["thought", "name", "code"]

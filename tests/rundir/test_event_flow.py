"""What the loop writes is what the TUI and the printer read.

A run goes through the real runner (`start_run`, as `selfdisco run` and `resume` call it) with
scripted services in place of the model servers: a scripted proposer and a cheap evaluator. It
meets rejections of every kind, a divergence, a failure, a model-server restart and a pause; it
is stopped from the control file, resumed, killed mid-evaluation and resumed again. Its real
events.jsonl must fit the event schema field by field, the TUI's fold of it must give the table
the archive holds, and the headless printer (a listener on the same stream) must follow it.
"""

from __future__ import annotations

import io
import json

import pytest
from loop_helpers import DUEL_WINS, PromptCurveEvaluator, ScriptedProposer, answer

from selfdisco.config import load_config
from selfdisco.discovery.interface import Services
from selfdisco.execution.records import Result
from selfdisco.launch import start
from selfdisco.launch.start import prepare_run_dir, start_run
from selfdisco.losses import screen
from selfdisco.losses.catalog import catalog_entry
from selfdisco.losses.parse import parse_answer
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.control import send
from selfdisco.rundir.events import EVENT_TYPES, EVENTS_FILE, check_event, read_events
from selfdisco.tui.printer import Printer
from selfdisco.tui.state import RunState

DISCOVERY = {"generations": 2, "candidates_per_generation": 2, "burn_in": ["dpo", "hinge"],
             "max_resamples": 2, "duel_samples": 5}
ANSWERS = [
    # generation 1: a valid loss and an unparsable answer, resampled into a duplicate of dpo,
    # then into a new loss (whose first evaluation loses the model server)
    answer("cell_like", "0.5 * F.softplus(-1.0 * x) + 0.5 * torch.exp(-1.0 * x)"),
    "not json at all",
    answer("dpo_again", "1.0 * F.softplus(-1.0 * x)"),
    answer("steeper", "1.0 * F.softplus(-3.0 * x)"),
    # the duel after generation 1: the base's answers, then the best policy's (it wins)
    *["not json either"] * 5, *DUEL_WINS,
    # generation 2: a loss that diverges in training, and one that fails the static check,
    # resampled into one whose evaluation fails
    answer("blow_up", "torch.exp(-30.0 * x)"),
    json.dumps({"thought": "t", "name": "imports",
                "code": "import os\ndef loss_fn(a, b, c, d, beta):\n    return a"}),
    answer("boom", "0.7 * torch.relu(1 - 2.0 * x) + 0.3 * torch.exp(-1.0 * x)"),
]


class TroubledEvaluator(PromptCurveEvaluator):
    """PromptCurveEvaluator, except: "steeper" loses the model server once, "boom" fails, and
    evaluating "cell_like" pauses and resumes the run through its control file."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir
        self.crashed = False
        self.to_restart = False

    def restart(self) -> bool:
        """The loop's health check: True (a restart) once after each crash."""
        restarted, self.to_restart = self.to_restart, False
        return restarted

    def evaluate(self, rows, on_progress, on_done, on_start=None, replicates=None) -> None:
        for row in rows:
            if row.name == "cell_like":
                send(self.run_dir, "pause")
                send(self.run_dir, "resume")
            if row.name == "boom" or (row.name == "steeper" and not self.crashed):
                on_start(row)
                on_progress(row, {"step": 1, "total": 2, "loss": 0.5})
                if row.name == "boom":
                    result = Result.failed("candidate", "the loss raised ZeroDivisionError",
                                           step=1)
                else:
                    self.crashed = self.to_restart = True
                    result = Result.failed("server", "the model server went away")
                on_done(row, result)
                continue
            super().evaluate([row], on_progress, on_done, on_start, replicates)


class Killed(Exception):
    """Stands for the run's process dying at this event."""


def check_schema(run_dir) -> set[str]:
    """Every event of the run fits its declaration, field by field; returns the types seen."""
    events = list(read_events(run_dir / EVENTS_FILE))
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    for event in events:
        check_event(event)
    return {event["type"] for event in events}


def check_table(run_dir) -> RunState:
    """The TUI's table, folded from the event log, is what the archive holds."""
    state = RunState.from_run_dir(run_dir)
    archive = Archive(run_dir)
    rows, best = archive.rows(), archive.best()
    archive.close()
    table = {row.id: (row.generation, row.name, row.status, row.fitness, row.stderr, row.kl)
             for row in state.rows()}
    recorded = {r.id: (r.generation, r.name or "?", r.status, r.fitness, r.stderr,
                       r.metrics.get("kl") if r.status == "scored" else None) for r in rows}
    assert table == recorded
    ranked = sorted((r for r in rows if r.fitness is not None), key=lambda r: (-r.fitness, r.seq))
    assert [row.id for row in state.rows()][:len(ranked)] == [r.id for r in ranked]
    assert state.best().id == best.id
    for r in rows:  # why each one that did not score did not: the archive's words
        if r.status != "scored":
            assert (state.candidates[r.id].stage, state.candidates[r.id].reason) == (
                r.stage if r.status == "rejected" else None, r.reason)
    return state


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """The run, started, stopped after generation 1, resumed, killed in generation 2 and
    resumed to its end; with what each start printed."""
    run_dir = prepare_run_dir(load_config("smoke", overrides={"discovery": DISCOVERY}),
                              tmp_path_factory.mktemp("flow") / "run")
    proposer, evaluator = ScriptedProposer(ANSWERS), TroubledEvaluator(run_dir)

    def scripted_services(config, run_dir, task, settings, events, stack, description):
        return Services(proposer=proposer, evaluator=evaluator, screen=screen,
                        parse=parse_answer, catalog=catalog_entry, adapters=proposer,
                        task_description=description, beta=settings.beta,
                        health=evaluator.restart)

    def stop_after_generation_1(event: dict) -> None:
        if event["type"] == "generation_finished" and event["generation"] == 1:
            send(run_dir, "stop")

    def die_in_generation_2(event: dict) -> None:
        if event["type"] == "candidate_status" and event["id"].startswith("g02-"):
            raise Killed

    outputs = [io.StringIO() for _ in range(3)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(start, "_live_services", scripted_services)
        ended = [start_run(run_dir, resume=False,
                           listeners=[Printer(outputs[0]), stop_after_generation_1])]
        with pytest.raises(Killed):
            start_run(run_dir, resume=True,
                      listeners=[Printer(outputs[1], run_dir=run_dir), die_in_generation_2])
        ended.append(start_run(run_dir, resume=True,
                               listeners=[Printer(outputs[2], run_dir=run_dir)]))
    return {"dir": run_dir, "ended": ended, "printed": [out.getvalue() for out in outputs]}


def test_every_event_fits_the_schema_and_every_type_is_written(run):
    assert run["ended"] == ["stopped on request", "generation limit reached"]
    # Every type but the held-out evaluation's (tests/heldout/test_heldout.py writes those)
    # and the multi-fidelity stages' (tests/discovery/search/test_fidelity.py).
    assert check_schema(run["dir"]) == {t for t in EVENT_TYPES if not t.startswith("heldout_")
                                        and t != "candidate_stage"}
    resumed = [e for e in read_events(run["dir"] / EVENTS_FILE) if e["type"] == "run_resumed"]
    assert [e["requeued"] for e in resumed] == [[], ["g02-c1"]]


def test_the_tuis_fold_gives_the_archives_table(run):
    state = check_table(run["dir"])
    assert {row.status for row in state.candidates.values()} == {
        "rejected", "scored", "diverged", "failed"}
    assert {row.stage for row in state.candidates.values()} >= {"parse", "screen", "duplicate"}
    assert state.finish_reason == "generation limit reached" and not state.paused
    assert (state.run_id, state.task, state.preset) == (run["dir"].name, "sentiment", "smoke")


def test_the_printer_follows_the_same_stream(run):
    first, killed, last = run["printed"]
    assert "run finished: stopped on request" in first and "g01-c1 cell_like fitness" in first
    assert "control: pause" in first and "server restarted: after a crash" in first
    # A resumed run's printer knows the candidates proposed before it started.
    assert "g02-c1 blow_up training" in killed
    assert "g02-c1 blow_up training" in last and "warning: g02-c1 blow_up diverged" in last
    assert "error: g02-c2-r1 boom failed: the loss raised ZeroDivisionError" in last
    assert "run finished: generation limit reached" in last

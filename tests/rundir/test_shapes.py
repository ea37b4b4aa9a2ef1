"""Loss shapes: computed once in the screening sandbox at the run's beta, stored in the archive,
and only read by the TUI (whose process never imports torch) and the report."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop

from selfdisco.losses import catalog, compile_loss
from selfdisco.rundir.archive import ARCHIVE_FILE, REFERENCE_SHAPE, SCHEMA, Archive, read_shapes
from selfdisco.rundir.shape import GRID, LossShape, grid_logps

BETA = 0.3  # neither the screening checks' beta nor a fingerprint beta
ANSWERS = [answer("cell_like", "0.5 * F.softplus(-x) + 0.5 * torch.exp(-x)"),
           answer("steeper", "F.softplus(-3.0 * x)"),
           answer("steeper_again", "F.softplus(-3.0 * x) + 1.0"),  # a duplicate of steeper
           answer("hinge_like", "torch.relu(1 - x)")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("shapes") / "run"
    loop = make_loop(run, ScriptedProposer(list(ANSWERS)), CurveEvaluator(), generations=2,
                     candidates_per_generation=2, self_improve="off")  # no duel takes answers
    loop.services.beta = BETA  # the run's training beta, as runner.py sets it
    loop.run()
    return run


def expected_shape(code: str, beta: float) -> tuple[list[float], list[float]]:
    """The loss on the grid and its slope along rho, computed here from the code itself."""
    import torch

    inputs = [torch.tensor(values, requires_grad=True) for values in grid_logps()]
    losses = compile_loss(code)(*inputs, beta)
    losses.sum().backward()
    slope = (inputs[0].grad - inputs[1].grad) / 2
    return losses.detach().tolist(), slope.tolist()


def test_the_stored_shape_is_the_candidates_loss_on_the_grid(run_dir):
    archive = Archive(run_dir)
    rows = {row.id: row for row in archive.rows()}
    reference = archive.get_meta(REFERENCE_SHAPE)
    archive.close()
    shaped = [row for row in rows.values() if row.shape]
    assert {row.name for row in shaped} >= {"dpo", "hinge", "cell_like", "steeper",
                                            "steeper_again", "hinge_like"}
    assert rows["base"].shape is None  # no code, no shape
    assert any(row.status == "rejected" and row.stage == "duplicate" for row in shaped)
    for row in shaped:
        shape = LossShape.from_dict(row.shape)
        assert shape.beta == BETA and shape.rho == GRID
        loss, slope = expected_shape(row.code, BETA)
        assert shape.loss == pytest.approx(loss, rel=1e-6, abs=1e-6), row.id
        assert shape.slope == pytest.approx(slope, rel=1e-6, abs=1e-6), row.id
    assert reference == rows["burn-dpo"].shape  # dpo, drawn beside every candidate


def test_an_archive_without_shapes_still_opens(tmp_path):
    line = next(ln for ln in SCHEMA.splitlines() if ln.strip().startswith("shape TEXT"))
    db = sqlite3.connect(tmp_path / ARCHIVE_FILE)
    db.executescript(SCHEMA.replace(line + "\n", ""))  # the schema before shapes
    db.execute("INSERT INTO candidates (id, seq, generation, kind, status, name, code, "
               "fingerprint, created, updated) VALUES ('g01-c1', 1, 1, 'proposal', 'scored', "
               "'old', 'def f(): pass', '{\"version\": 1, \"blocks\": {}}', 0, 0)")
    db.commit()
    db.close()
    assert read_shapes(tmp_path, "g01-c1") == (None, None)  # read-only: no column, no shape
    archive = Archive(tmp_path)
    row = archive.get("g01-c1")
    assert (row.name, row.status, row.shape) == ("old", "scored", None)
    assert row.fingerprint == {"version": 1, "blocks": {}}
    archive.update("g01-c1", shape={"beta": 0.1, "rho": [0.0], "loss": [1.0], "slope": [0.5]})
    archive.close()
    assert read_shapes(tmp_path, "g01-c1")[0]["loss"] == [1.0]
    assert read_shapes(tmp_path / "missing", "g01-c1") == (None, None)


def test_a_loss_that_is_not_finite_far_out_keeps_gaps():
    from selfdisco.losses import Candidate, screen

    steep = catalog.get("dpo").candidate.code.replace(
        "return -F.logsigmoid(beta * rho)", "return torch.exp(-2 * rho)")
    result = screen(Candidate("", "steep", steep), beta=0.05)
    assert result.ok, result.reason
    assert result.shape.loss[0] is None and result.shape.loss[-1] is not None
    again = LossShape.from_dict(json.loads(json.dumps(result.shape.to_dict())))
    assert again == result.shape


SHOW_DETAIL = textwrap.dedent("""
    import asyncio, json, sys, time
    from selfdisco.tui.app import DetailScreen, DiscoApp
    from selfdisco.tui.shapes import RecordedShape
    from selfdisco.tui.widgets import CandidatesTable, CandidateView, LossPlot

    async def until(pilot, condition, what):
        deadline = time.monotonic() + 120
        while not condition():
            assert time.monotonic() < deadline, "gave up waiting for " + what
            await pilot.pause(0.01)

    async def main(run_dir, key):
        app = DiscoApp(run_dir, poll_interval=0.01)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: app.state.finished, "the run's events")
            table = app.query_one("#candidates", CandidatesTable)
            for _ in range(len(app.state.candidates)):
                if table.selected_key == key:
                    break
                await pilot.press("down")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail")
            await until(pilot, lambda: isinstance(app.shapes.get(key, (0, 0))[1],
                                                  RecordedShape), "the shape")
            await pilot.pause()
            view = app.screen.query_one(CandidateView)
            shape = app.shapes[key][1]
            return {"detail": app.screen.key, "plot": view.query_one(LossPlot).display,
                    "loss": list(shape.candidate.loss), "dpo": shape.dpo is not None,
                    "torch": "torch" in sys.modules}

    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
""")


def test_the_tui_shows_a_screened_candidates_shape_without_torch(run_dir):
    archive = Archive(run_dir)
    row = archive.get("g01-c2")
    archive.close()
    assert row.status == "scored" and row.shape
    result = subprocess.run([sys.executable, "-c", SHOW_DETAIL, str(run_dir), row.id],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown == {"detail": row.id, "plot": True, "loss": row.shape["loss"], "dpo": True,
                     "torch": False}

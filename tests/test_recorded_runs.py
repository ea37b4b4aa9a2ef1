"""Run directories recorded before the package moved into folders (tests/data/runs: a smoke
sentiment run and a digits run) still open: in the TUI, in `report`, `resume` and `heldout
--estimate`. Stored names (event fields, archive columns, metric keys) did not change."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import EVENTS_FILE
from selfdisco.rundir.paths import resolve_run

RUNS = Path(__file__).parent / "data" / "runs"


@pytest.fixture(params=["smoke-sentiment", "digits"])
def run_dir(request, tmp_path) -> Path:
    copy = tmp_path / request.param
    shutil.copytree(RUNS / request.param, copy)
    return copy


def selfdisco(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdisco", *args], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def recorded_ids(run_dir: Path) -> list[str]:
    archive = Archive(run_dir)
    try:
        return [row.id for row in archive.rows()]
    finally:
        archive.close()


def test_the_tui_shows_every_recorded_candidate(run_dir):
    from selfdisco.tui.app import DiscoApp
    from selfdisco.tui.widgets import CandidatesTable

    resolve_run(str(run_dir), required=EVENTS_FILE)  # what `selfdisco tui` checks first
    last = json.loads((run_dir / EVENTS_FILE).read_text().splitlines()[-1])["seq"]
    ids = recorded_ids(run_dir)

    async def scenario():
        app = DiscoApp(run_dir)
        async with app.run_test(size=(160, 48)) as pilot:
            for _ in range(1000):
                if app.state.seq == last:
                    break
                await pilot.pause(0.01)
            await pilot.pause()
            table = app.query_one("#candidates", CandidatesTable)
            shown = [str(table.get_row(key)[0]) for key in table.rows]
            return app.state.finished, shown

    finished, shown = asyncio.run(scenario())
    assert finished
    assert ids and set(shown) == set(ids)


def test_report_resume_and_the_heldout_estimate_read_it(run_dir):
    ids = recorded_ids(run_dir)
    report = selfdisco("report", str(run_dir))
    assert report.returncode == 0, report.stderr
    text = (run_dir / "report.md").read_text()
    assert all(id in text for id in ids if id.startswith("burn-"))

    resume = selfdisco("resume", str(run_dir), "--no-tui")
    assert resume.returncode == 0, resume.stderr
    assert "has already finished" in resume.stdout + resume.stderr

    estimate = selfdisco("heldout", str(run_dir), "--estimate")
    assert estimate.returncode == 0, estimate.stderr
    assert "points to measure" in estimate.stdout
    assert recorded_ids(run_dir) == ids  # nothing was added

"""The TUI attached to a live smoke run: its candidates arrive in the table as the run goes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events
from selfdisco.tui.app import DiscoApp
from selfdisco.tui.widgets import CandidatesTable

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 900


def table_rows(app: DiscoApp) -> dict[str, str]:
    table = app.query_one("#candidates", CandidatesTable)
    return {str(table.get_row(key)[0]): table.get_row(key)[3].plain for key in table.rows}


def test_tui_follows_a_live_smoke_run(vllm_smoke, tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "selfdisco", "run", "--preset", "smoke", "--no-tui",
               "--run-dir", str(run_dir), "--set", f"server.url={vllm_smoke.base_url}"]
    log = open(tmp_path / "run.out", "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)

    async def watch() -> list[dict[str, str]]:
        """Snapshots of the table, one per change, until the run's process ends."""
        app = DiscoApp(run_dir, poll_interval=0.1)
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + RUN_TIMEOUT_S
        async with app.run_test(size=(160, 48)) as pilot:
            while True:
                ended = proc.poll() is not None
                await pilot.pause(0.05)
                rows = table_rows(app)
                if not seen or rows != seen[-1]:
                    seen.append(rows)
                # Once the process is gone, let the app read the log to its end.
                if ended and app.state.finished:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("the smoke run did not finish in time")
            assert app.state.run_id == run_dir.name
        return seen

    try:
        seen = asyncio.run(watch())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    output = (tmp_path / "run.out").read_text()
    assert proc.returncode == 0, output[-3000:]

    final = seen[-1]
    proposed = [e["id"] for e in read_events(run_dir / "events.jsonl")
                if e["type"] == "candidate_proposed"]
    # A baseline reused from the burn-in cache says so beside its status.
    archive = {row.id: row.status + (" (cached)" if row.metrics.get("cached_from") else "")
               for row in Archive(run_dir).rows()}
    # Every candidate of the run is in the table, with the status the archive recorded.
    assert final == archive
    assert set(final) == set(proposed)
    # They arrived while the app was watching: the table grew in steps, in the log's order.
    assert seen[0] == {} or len(seen[0]) < len(final)
    counts = [len(rows) for rows in seen]
    assert counts == sorted(counts) and len(set(counts)) >= 3
    first_seen: list[str] = []
    for rows in seen:
        first_seen.extend(sorted((key for key in rows if key not in first_seen),
                                 key=proposed.index))
    assert first_seen == proposed
    # Statuses moved forward live: some candidate was seen before it was scored.
    assert any(rows.get(key) not in (None, "scored") for rows in seen[:-1]
               for key, status in final.items() if status == "scored")

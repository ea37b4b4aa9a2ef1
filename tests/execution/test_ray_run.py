"""`selfdisco run` on the smoke preset through the Ray executor: a local cluster the run starts
itself, two workers, progress from the Ray jobs in the event log, and no process left after."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from selfdisco.rundir.events import read_events

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 900
MARK = "SELFDISCO_RAY_RUN_TEST"  # in the run's environment, so in every process it starts
PATTERNS = ("ray::", "raylet", "selfdisco.execution.worker")


def marked(mark: str, since: float) -> list[tuple[int, str]]:
    """(pid, command line) of live processes started after `since` that carry `mark`."""
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "cmdline"]):
        try:
            if proc.info["create_time"] < since or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARK) == mark:
                found.append((proc.pid, " ".join(proc.info["cmdline"] or [])))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def leftovers(mark: str, since: float) -> list[tuple[int, str]]:
    """Ray and worker processes that are this test's descendants or its run's."""
    mine = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                mine.append((proc.pid, " ".join(proc.cmdline())))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return [(pid, line) for pid, line in {*mine, *marked(mark, since)}
            if any(p in line for p in PATTERNS)]


def test_a_smoke_run_on_a_local_ray_cluster(vllm_smoke, tmp_path):
    began = time.time() - 1  # create_time is rounded
    mark = uuid.uuid4().hex
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # no address: start one
    env[MARK] = mark
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfdisco", "run", "--preset", "smoke", "--no-tui",
         "--run-dir", str(run_dir), "--set", f"server.url={vllm_smoke.base_url}",
         "--set", 'executor="ray"', "--set", "workers=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
        env=env)
    seen: set[str] = set()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= {line for _, line in marked(mark, began)}
            time.sleep(0.5)
        assert proc.poll() is not None, f"the run took over {RUN_TIMEOUT_S} s"
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert proc.returncode == 0, output[-4000:]
    assert "run finished" in output
    assert any("raylet" in line for line in seen), "the run started no Ray cluster"
    assert any("selfdisco.execution.worker" in line for line in seen), "no worker ran"

    events = list(read_events(run_dir / "events.jsonl"))
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    progress = [e for e in events if e["type"] == "training_progress"]
    candidates = {e["id"] for e in events if e["type"] == "candidate_proposed"
                  and not e["id"].startswith(("base", "burn-"))}
    trained = {e["id"] for e in progress} & candidates
    assert trained, "no training progress from a generation's candidates reached the event log"
    assert all(0 < e["step"] <= e["total"] for e in progress)

    left = leftovers(mark, began)
    stop = time.monotonic() + 30  # shutdown is over when the run exits; allow for slow reaping
    while left and time.monotonic() < stop:
        time.sleep(1)
        left = leftovers(mark, began)
    assert not left, f"processes left after the run: {left}"

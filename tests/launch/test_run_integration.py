"""`selfdisco run` end to end on the smoke preset with a real vLLM server on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from confine_helpers import require_confinement

from selfdisco.losses import confine
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import read_events

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 900


def selfdisco(*args: str, timeout: float = RUN_TIMEOUT_S, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdisco", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


def smoke_args(run_dir, server, *extra: str) -> list[str]:
    return ["run", "--preset", "smoke", "--no-tui", "--run-dir", str(run_dir),
            "--set", f"server.url={server.base_url}", *extra]


@pytest.fixture(scope="module")
def smoke_run(vllm_smoke, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    result = selfdisco(*smoke_args(run_dir, vllm_smoke))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir, result


def test_smoke_run_records_two_generations(smoke_run):
    run_dir, result = smoke_run
    assert "run finished: generation limit reached" in result.stdout
    archive = Archive(run_dir)
    rows = {r.id: r for r in archive.rows()}
    assert {"base", "burn-dpo", "burn-hinge"} <= set(rows)
    assert [g["state"] for g in archive.generations()] == ["done", "done"]
    for g in (1, 2):
        mine = [r for r in rows.values() if r.generation == g]
        assert mine, f"generation {g} recorded nothing"
        assert all(r.status in ("rejected", "scored", "diverged", "failed") for r in mine)
        assert all(r.proposer for r in mine)
        assert all(r.seeds.get("propose") for r in mine)
        valid = [r for r in mine if r.status != "rejected"]
        assert 1 <= len(valid) <= 2
        for r in valid:
            assert (run_dir / "candidates" / r.id / "result.json").exists()
    events = list(read_events(run_dir / "events.jsonl"))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.count("generation_finished") == 2
    proposed = {e["id"] for e in events if e["type"] == "candidate_proposed"}
    assert proposed == set(rows)
    assert (run_dir / "config.toml").exists()
    assert (run_dir / "llm" / "requests.jsonl").exists()
    # The attached server was compared with transformers before the run used it.
    checks = [e["message"] for e in events
              if e["type"] == "log" and "greedy tokens" in e["message"]]
    assert len(checks) == 1 and "float32" in checks[0] and "agree 32/32" in checks[0], checks


def test_a_smoke_run_trains_its_candidates_confined(smoke_run):
    """The run says at its start how candidate code runs, and every trained row ran confined
    wherever this machine can confine (CI: root with bubblewrap from scripts/setup.sh)."""
    run_dir, _ = smoke_run
    confined = confine.status().confined
    events = list(read_events(run_dir / "events.jsonl"))
    said = [e["message"] for e in events[:3] if e["type"] == "log"]
    assert said and ("runs confined by bubblewrap" if confined else "UNCONFINED") in said[0]
    trained = [r for r in Archive(run_dir).rows() if r.metrics.get("train")]
    assert trained and all(r.metrics["train"]["confined"] is confined for r in trained)


def test_a_digits_run_on_the_smoke_preset_evaluates_confined(vllm_smoke, tmp_path):
    """A digits discovery with the smoke model as its proposer: screened and evaluated in the
    confined sandbox."""
    require_confinement()
    run_dir = tmp_path / "digits"
    result = selfdisco("run", "--preset", "smoke", "--no-tui", "--run-dir", str(run_dir),
                       "--set", "task.name=digits", "--set", "discovery.generations=1",
                       "--set", 'discovery.burn_in=["cross_entropy", "focal"]',
                       "--set", "discovery.code_grammar=free",
                       "--set", "discovery.self_improve=off",
                       "--set", f"server.proposer_source={vllm_smoke.base_url}",
                       "--set", "confine=require")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {r.id: r for r in Archive(run_dir).rows()}
    assert rows["burn-cross_entropy"].status == "scored"
    scored = [r for r in rows.values() if r.status == "scored" and r.id != "base"]
    assert scored and all(r.metrics["confined"] is True for r in scored)
    events = list(read_events(run_dir / "events.jsonl"))
    assert any("runs confined by bubblewrap" in e.get("message", "") for e in events[:3])


def test_report_is_written(smoke_run):
    run_dir, _ = smoke_run
    result = selfdisco("report", str(run_dir), timeout=300)
    assert result.returncode == 0, result.stderr
    report = (run_dir / "report.md").read_text()
    assert "## Ranking" in report and "burn-dpo" in report
    assert (run_dir / "report_fitness.png").stat().st_size > 1000


def test_replay_gives_the_same_candidates_and_decisions_without_a_model(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    replay_dir = tmp_path / "replay"
    result = selfdisco("run", "--no-tui", "--proposer", f"replay:{run_dir}", "--run-dir",
                       str(replay_dir), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    def decisions(path):
        return [(r.id, r.name, r.code, r.status, r.stage, r.reason, r.fitness, r.proposer)
                for r in Archive(path).rows()]

    assert decisions(replay_dir) == decisions(run_dir)
    assert not (replay_dir / "server.log").exists()


def _wait_for(run_dir, predicate, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in read_events(run_dir / "events.jsonl"):
            if predicate(event):
                return event
        time.sleep(0.5)
    raise AssertionError(f"no matching event within {timeout_s} s")


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it ended between the two questions
        return False


def test_sigkill_during_training_then_resume_loses_nothing(vllm_smoke, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "selfdisco",
                             *smoke_args(run_dir, vllm_smoke, "--candidates", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(run_dir, lambda e: e["type"] == "training_progress"
                  and e["id"].startswith("g01"), RUN_TIMEOUT_S)
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert workers  # the training worker at least; else "none survives" holds trivially
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    psutil.wait_procs(workers, timeout=30)
    assert not [p for p in workers if _alive(p)]
    before = {r.id: r for r in Archive(run_dir).rows()}
    assert before["g01-c1"].status in ("training", "scoring")  # in flight when killed
    result = selfdisco("resume", str(run_dir), "--no-tui")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "re-queued g01-c1" in result.stdout
    after = {r.id: r for r in Archive(run_dir).rows()}
    for id, row in before.items():
        kept = after[id]
        assert (kept.name, kept.code, kept.raw_text, kept.seeds) == (row.name, row.code,
                                                                      row.raw_text, row.seeds)
        if row.status in ("scored", "rejected", "diverged", "failed"):
            assert (kept.status, kept.fitness, kept.reason) == (row.status, row.fitness,
                                                                row.reason)
    assert after["g01-c1"].status in ("scored", "diverged", "failed")
    events = list(read_events(run_dir / "events.jsonl"))
    assert events[-1]["type"] == "run_finished"
    assert [g["state"] for g in Archive(run_dir).generations()] == ["done", "done"]
    json.dumps([e for e in events])  # the log stays valid JSON throughout

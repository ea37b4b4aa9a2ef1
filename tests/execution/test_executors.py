"""Executors: the registry, and jobs run by a stand-in worker (progress, results, timeouts,
cancellation, no process left behind); the Ray executor on a local cluster (integration)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from selfdisco.errors import UserError
from selfdisco.execution.executors import JOB_FILE, LocalExecutor, executor_names, make_executor

# A worker that writes `steps` progress lines, `sleep_s` apart, then its result; its pid goes
# to worker.pid so a test can check that it is gone. Like the real worker, it dies with the
# process that started it.
STAND_IN_WORKER = """
import ctypes, json, os, signal, sys, time
from pathlib import Path
ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)
job_path = Path(sys.argv[1])
job = json.loads(job_path.read_text())
(job_path.parent / "worker.pid").write_text(str(os.getpid()))
for step in range(1, job["steps"] + 1):
    time.sleep(job["sleep_s"])
    with open(job_path.parent / "progress.jsonl", "a") as handle:
        handle.write(json.dumps({"step": step, "total": job["steps"], "loss": 1.0 / step}) + "\\n")
tmp = job_path.parent / "result.json.tmp"
tmp.write_text(json.dumps({"status": "scored", "fitness": job["fitness"], "stderr": 0.0}))
tmp.replace(job_path.parent / "result.json")
"""


@pytest.fixture
def worker(tmp_path) -> list[str]:
    script = tmp_path / "stand_in_worker.py"
    script.write_text(STAND_IN_WORKER)
    return [sys.executable, str(script)]


def make_jobs(tmp_path: Path, count: int, steps: int = 3, sleep_s: float = 0.1) -> list[Path]:
    dirs = []
    for i in range(count):
        job_dir = tmp_path / "candidates" / f"c{i}"
        job_dir.mkdir(parents=True)
        (job_dir / JOB_FILE).write_text(json.dumps({"steps": steps, "sleep_s": sleep_s,
                                                    "fitness": float(i)}))
        dirs.append(job_dir)
    return dirs


class Record:
    """What an executor reported, per job directory (callbacks may come from threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started: list[Path] = []
        self.progress: dict[Path, list[dict]] = {}
        self.results: dict[Path, object] = {}

    def on_start(self, job_dir):
        with self.lock:
            self.started.append(job_dir)

    def on_progress(self, job_dir, line):
        with self.lock:
            self.progress.setdefault(job_dir, []).append(line)

    def on_done(self, job_dir, result):
        with self.lock:
            self.results[job_dir] = result

    def callbacks(self) -> dict:
        return {"on_start": self.on_start, "on_progress": self.on_progress,
                "on_done": self.on_done}


def worker_gone(job_dir: Path) -> bool:
    pid = int((job_dir / "worker.pid").read_text())
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def check_finished(jobs: list[Path], record: Record) -> None:
    assert sorted(record.started) == sorted(jobs)
    for i, job_dir in enumerate(jobs):
        result = record.results[job_dir]
        assert (result.status, result.fitness) == ("scored", float(i))
        assert [p["step"] for p in record.progress[job_dir]] == [1, 2, 3]
        assert worker_gone(job_dir)


def test_registry_names_and_clear_errors():
    assert executor_names() == ["local", "ray"]
    with pytest.raises(UserError, match="unknown executor 'slurm'; known executors: local, ray"):
        make_executor("slurm", 1)
    with pytest.raises(UserError, match="executor_options for the local executor.*'gpus'"):
        make_executor("local", 1, {"gpus": 1})
    assert isinstance(make_executor("local", 2), LocalExecutor)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_jobs_report_start_progress_and_result(tmp_path, worker, workers):
    executor = LocalExecutor(workers)
    executor.command = worker
    jobs = make_jobs(tmp_path, 2)
    record = Record()
    executor.map(jobs, timeout_s=60, **record.callbacks())
    check_finished(jobs, record)


def test_a_job_past_its_time_is_killed_and_reported(tmp_path, worker):
    executor = LocalExecutor(1)
    executor.command = worker
    (job,) = make_jobs(tmp_path, 1, steps=100, sleep_s=0.2)
    record = Record()
    executor.map([job], timeout_s=1.0, **record.callbacks())
    result = record.results[job]
    assert (result.status, result.cause) == ("failed", "timeout")
    assert worker_gone(job)


def test_an_interrupted_map_kills_every_job_in_flight(tmp_path, worker):
    """A callback's exception (as Ctrl-C would) ends map quickly, leaving no worker running."""
    executor = LocalExecutor(2)
    executor.command = worker
    jobs = make_jobs(tmp_path, 3, steps=100, sleep_s=0.2)

    def interrupt(job_dir, line):
        if job_dir == jobs[0] and line["step"] == 2:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        executor.map(jobs, timeout_s=60, on_progress=interrupt)
    assert time.monotonic() - started < 15
    assert all(worker_gone(d) for d in jobs[:2])
    assert not (jobs[2] / "worker.pid").exists()  # never started


def test_ray_without_a_cluster_at_the_address_is_a_clear_error(tmp_path):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray session of this process would be used instead")
    executor = make_executor("ray", 1, {"address": "auto"})  # "auto": join, never start one
    with pytest.raises(UserError, match="could not join the Ray cluster auto.*executor_options"):
        executor.map(make_jobs(tmp_path, 1), timeout_s=10)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local two-CPU Ray cluster; after it is shut down, no process of it may be left."""
    ray = pytest.importorskip("ray")
    before = set(psutil.Process().children(recursive=True))  # e.g. a session's vLLM server
    ray.init(num_cpus=2, address="local", include_dashboard=False)
    yield ray
    ray.shutdown()

    def left() -> list[psutil.Process]:
        return [p for p in psutil.Process().children(recursive=True) if p not in before]

    deadline = time.monotonic() + 30
    while left() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left() == []


@pytest.mark.integration
def test_ray_runs_jobs_with_progress(ray_cluster, tmp_path, worker):
    executor = make_executor("ray", 2, {"cpus_per_job": 1})
    executor.command = worker
    jobs = make_jobs(tmp_path, 2, sleep_s=0.3)
    record = Record()
    executor.map(jobs, timeout_s=120, **record.callbacks())
    check_finished(jobs, record)


@pytest.mark.integration
def test_an_interrupted_ray_map_kills_its_jobs(ray_cluster, tmp_path, worker):
    executor = make_executor("ray", 1)
    executor.command = worker
    jobs = make_jobs(tmp_path, 2, steps=100, sleep_s=0.2)

    def interrupt(job_dir, line):
        if line["step"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        executor.map(jobs, timeout_s=120, on_progress=interrupt)
    deadline = time.monotonic() + 30
    while not worker_gone(jobs[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_gone(jobs[0])
    assert not (jobs[1] / "worker.pid").exists()  # workers = 1: never started


@pytest.mark.integration
def test_a_job_whose_ray_worker_dies_is_reported_killed(ray_cluster, tmp_path, worker):
    executor = make_executor("ray", 2)
    executor.command = worker
    jobs = make_jobs(tmp_path, 2, steps=6, sleep_s=0.3)
    record = Record()

    def kill_ray_worker(job_dir, line):
        record.on_progress(job_dir, line)
        if job_dir == jobs[0] and line["step"] == 2:
            pid = int((job_dir / "worker.pid").read_text())
            psutil.Process(pid).parent().kill()  # the Ray worker process running the task

    executor.map(jobs, timeout_s=120, on_progress=kill_ray_worker, on_done=record.on_done)
    lost, finished = record.results[jobs[0]], record.results[jobs[1]]
    assert (lost.status, lost.cause) == ("failed", "killed") and "Ray" in lost.reason
    assert (finished.status, finished.fitness) == ("scored", 1.0)
    assert [p["step"] for p in record.progress[jobs[1]]] == [1, 2, 3, 4, 5, 6]
    deadline = time.monotonic() + 30
    while not worker_gone(jobs[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_gone(jobs[0])

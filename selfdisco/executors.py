"""Where candidate evaluations run: local child processes (default) or Ray tasks.

Both run the same thing, `python -m selfdisco.worker JOB.json`, in a new process group that is
killed as a whole on timeout, so a hang, a crash or an OOM in one candidate never takes the run
down. Each returns the worker's result record (see worker.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.events import read_appended
from selfdisco.worker import PROGRESS_FILE, RESULT_FILE

JOB_FILE = "job.json"
Progress = Callable[[dict], None]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_job_process(job_dir: Path, timeout_s: float, on_progress: Progress | None = None,
                    poll_s: float = 0.5) -> dict:
    """Run the worker on job_dir/job.json and wait for it; kill its process group on timeout."""
    job_dir = Path(job_dir)
    for stale in (RESULT_FILE, PROGRESS_FILE):
        (job_dir / stale).unlink(missing_ok=True)
    log = open(job_dir / "worker.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "selfdisco.worker", str(job_dir / JOB_FILE)],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    offset = 0
    try:
        while True:
            try:
                proc.wait(timeout=poll_s)
                finished = True
            except subprocess.TimeoutExpired:
                finished = False
            offset = _read_progress(job_dir / PROGRESS_FILE, offset, on_progress)
            if finished:
                break
            if time.monotonic() > deadline:
                _kill_group(proc)
                return {"status": "failed", "reason": f"evaluation took longer than "
                        f"{timeout_s / 60:.1f} minutes and was stopped"}
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        log.close()
    # The worker's own children (if any) go with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    result_path = job_dir / RESULT_FILE
    if not result_path.exists():
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit code {proc.returncode}")
        return {"status": "failed", "reason": f"the evaluation process died ({how}) without a "
                "result; see worker.log"}
    return json.loads(result_path.read_text())


def _read_progress(path: Path, offset: int, on_progress: Progress | None) -> int:
    if on_progress is None:
        return offset
    lines, offset = read_appended(path, offset)
    for line in lines:
        try:
            on_progress(json.loads(line))
        except ValueError:
            continue
    return offset


class LocalExecutor:
    """Child processes on this machine, `workers` at a time."""

    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers

    def map(self, job_dirs: list[Path], timeout_s: float,
            on_progress: Callable[[Path, dict], None] | None = None,
            on_done: Callable[[Path, dict], None] | None = None,
            on_start: Callable[[Path], None] | None = None) -> None:
        def one(job_dir: Path) -> None:
            if on_start:
                on_start(job_dir)
            progress = (lambda p: on_progress(job_dir, p)) if on_progress else None
            result = run_job_process(job_dir, timeout_s, progress)
            if on_done:
                on_done(job_dir, result)

        if self.workers == 1:
            for job_dir in job_dirs:
                one(job_dir)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            for future in [pool.submit(one, d) for d in job_dirs]:
                future.result()


class RayExecutor(LocalExecutor):
    """Ray tasks (one CPU or GPU each) running the same worker; needs a shared filesystem."""

    name = "ray"

    def __init__(self, workers: int = 1, gpus_per_job: float = 0.0):
        try:
            import ray
        except ImportError:
            raise UserError("executor = 'ray' needs Ray: pip install 'selfdisco[ray]'") from None
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True)
        super().__init__(workers)
        self._remote = ray.remote(num_gpus=gpus_per_job)(run_job_process)
        self._ray = ray

    def map(self, job_dirs, timeout_s, on_progress=None, on_done=None, on_start=None):
        pending = {}
        for job_dir in job_dirs:
            if on_start:
                on_start(job_dir)
            pending[self._remote.remote(job_dir, timeout_s)] = job_dir
        while pending:
            done, _ = self._ray.wait(list(pending), num_returns=1)
            for ref in done:
                job_dir = pending.pop(ref)
                if on_done:
                    on_done(job_dir, self._ray.get(ref))


def make_executor(name: str, workers: int) -> LocalExecutor:
    if name == "ray":
        return RayExecutor(workers)
    return LocalExecutor(workers)

"""Where candidate evaluations run: an executor runs worker jobs and reports on them.

Every executor runs the same thing, `python -m selfdisco.execution.worker JOB.json`
(run_job_process), in a new process group that is killed as a whole on timeout, so a hang, a crash
or an OOM in one candidate never takes the run down. Executors are registered by name (EXECUTORS,
lazy "module:attr" targets): adding one is a module with a class that follows `Executor` and a line
in EXECUTORS; config.executor names it and config.executor_options are its keyword arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from selfdisco.errors import UserError
from selfdisco.execution.records import PROGRESS_FILE, RESULT_FILE, Result
from selfdisco.llm.topology import release_leases
from selfdisco.registry import Registry
from selfdisco.rundir.events import read_appended

JOB_FILE = "job.json"
Progress = Callable[[dict], None]

# Executor name -> "module:attr" of its class; the class is imported on first use.
EXECUTORS = Registry("executor", {
    "local": "selfdisco.execution.executors:LocalExecutor",
    "ray": "selfdisco.execution.ray_executor:RayExecutor",
})


class Executor(Protocol):
    """Runs evaluation jobs (directories holding job.json) and reports on each.

    Constructed as `Executor(workers, **options)`: at most `workers` jobs run at once; options
    come from config.executor_options, and a bad one is a UserError. The constructor must be
    cheap (no cluster start, no heavy import): the config check builds one before a run starts.
    """

    name: str

    def map(self, job_dirs: list[Path], timeout_s: float,
            on_progress: Callable[[Path, dict], None] | None = None,
            on_done: Callable[[Path, Any], None] | None = None,
            on_start: Callable[[Path], None] | None = None) -> None:
        """Run every job and return when all are done.

        on_start(job_dir) when a job starts, on_progress(job_dir, line) for each line the
        worker appends to progress.jsonl, on_done(job_dir, result) with run_job_process's
        result. A job past timeout_s is killed and reported as failed. If map is interrupted
        (Ctrl-C, SIGTERM raised as KeyboardInterrupt, a callback's exception), it kills every
        job in flight, starts no other, and re-raises.
        """


def executor_names() -> list[str]:
    return EXECUTORS.names()


def make_executor(name: str, workers: int, options: dict | None = None) -> Executor:
    """The executor registered under `name`; UserError for an unknown name or option."""
    cls = EXECUTORS.load(name)
    try:
        return cls(workers, **(options or {}))
    except TypeError as err:
        raise UserError(f"executor_options for the {name} executor: {err}; see "
                        f"{cls.__module__}.{cls.__name__} for what it accepts") from None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Cancelled(Exception):
    """The executor was interrupted: this job's processes were killed."""


def run_job_process(job_dir: Path, timeout_s: float, on_progress: Progress | None = None,
                    poll_s: float = 0.5, cancel: threading.Event | None = None,
                    command: Sequence[str] | None = None) -> Result:
    """Run the worker on job_dir/job.json and wait for it; kill its process group on timeout.
    A model server the worker had put to sleep is woken once it has ended (killed or not), if
    no other worker still trains (selfdisco.llm.topology's sleep leases).

    Args:
        cancel: when set, the job is killed and Cancelled raised (within poll_s).
        command: the worker command, job.json's path appended; default: this interpreter's
            `-m selfdisco.execution.worker`.
    """
    job_dir = Path(job_dir)
    for stale in (RESULT_FILE, PROGRESS_FILE):
        (job_dir / stale).unlink(missing_ok=True)
    log = open(job_dir / "worker.log", "ab")
    command = list(command or (sys.executable, "-m", "selfdisco.execution.worker"))
    proc = subprocess.Popen([*command, str(job_dir / JOB_FILE)],
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
            offset = read_progress(job_dir / PROGRESS_FILE, offset, on_progress)
            if finished:
                break
            if cancel is not None and cancel.is_set():
                raise Cancelled(str(job_dir))
            if time.monotonic() > deadline:
                _kill_group(proc)
                release_leases(proc.pid)
                return Result.failed("timeout", f"evaluation took longer than "
                                     f"{timeout_s / 60:.1f} minutes and was stopped")
    except BaseException:
        _kill_group(proc)
        with contextlib.suppress(Exception):  # the interruption is what to report
            release_leases(proc.pid)
        raise
    finally:
        log.close()
    # The worker's own children (if any) go with it.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    release_leases(proc.pid)  # a worker that died in training cannot wake the server itself
    result_path = job_dir / RESULT_FILE
    if not result_path.exists():
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit code {proc.returncode}")
        return Result.failed("killed", f"the evaluation process died ({how}) without a "
                             "result; see worker.log")
    try:
        return Result.from_dict(json.loads(result_path.read_text()))
    except ValueError as err:
        return Result.failed("error", f"unreadable {result_path}: {err}")


def read_progress(path: Path, offset: int, on_progress: Progress | None) -> int:
    """Report the lines appended to a progress file since `offset`; returns the new offset."""
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
    """Child processes on this machine, `workers` at a time (no options)."""

    name = "local"
    command: Sequence[str] | None = None  # the worker command (see run_job_process)

    def __init__(self, workers: int = 1):
        self.workers = workers

    def map(self, job_dirs: list[Path], timeout_s: float,
            on_progress: Callable[[Path, dict], None] | None = None,
            on_done: Callable[[Path, Any], None] | None = None,
            on_start: Callable[[Path], None] | None = None) -> None:
        cancel = threading.Event()

        def one(job_dir: Path) -> None:
            if cancel.is_set():
                return
            try:
                if on_start:
                    on_start(job_dir)
                progress = (lambda p: on_progress(job_dir, p)) if on_progress else None
                result = run_job_process(job_dir, timeout_s, progress, cancel=cancel,
                                         command=self.command)
                if on_done:
                    on_done(job_dir, result)
            except BaseException:
                cancel.set()  # the other jobs are killed at their next poll; none starts
                raise

        if self.workers == 1:
            for job_dir in job_dirs:
                one(job_dir)
            return
        pool = ThreadPoolExecutor(self.workers)
        try:
            for future in [pool.submit(one, d) for d in job_dirs]:
                future.result()
        except BaseException:
            cancel.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

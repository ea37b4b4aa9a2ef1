"""The Ray executor: each job is a Ray task that runs the usual worker process.

The run directory must be on a filesystem every Ray node shares: a task reads job.json and
writes result.json and progress.jsonl there, and this process reads the progress as it grows.
Every node needs selfdisco installed as on this machine. Install Ray with
`pip install 'selfdisco[ray]'`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError, one_line
from selfdisco.execution.executors import read_progress, run_job_process
from selfdisco.execution.records import PROGRESS_FILE, RESULT_FILE, Result

POLL_S = 0.5


class RayExecutor:
    """Ray tasks, `workers` at a time, each holding `cpus_per_job` CPUs and `gpus_per_job` GPUs.

    Args:
        workers: jobs in flight at once.
        address: the cluster to join ("auto": the one on this machine, "ray://HOST:PORT": a
            remote one); empty: an initialised Ray session, else RAY_ADDRESS, else a new
            local cluster.
        cpus_per_job, gpus_per_job: resources each job's task asks Ray for.
    """

    name = "ray"
    command: Sequence[str] | None = None  # the worker command (see run_job_process)

    def __init__(self, workers: int = 1, address: str = "", cpus_per_job: float = 1.0,
                 gpus_per_job: float = 0.0):
        for key, value in (("cpus_per_job", cpus_per_job), ("gpus_per_job", gpus_per_job)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise UserError(f"executor_options.{key} must be a number of 0 or more, not "
                                f"{value!r}")
        if not isinstance(address, str):
            raise UserError(f"executor_options.address must be a string, not {address!r}")
        if importlib.util.find_spec("ray") is None:
            raise UserError("executor = 'ray' needs Ray: pip install 'selfdisco[ray]'")
        self.workers = workers
        self.address = address
        self.cpus_per_job = float(cpus_per_job)
        self.gpus_per_job = float(gpus_per_job)

    def map(self, job_dirs: list[Path], timeout_s: float,
            on_progress: Callable[[Path, dict], None] | None = None,
            on_done: Callable[[Path, Any], None] | None = None,
            on_start: Callable[[Path], None] | None = None) -> None:
        # lazy: loads ray
        import ray

        started = not ray.is_initialized()  # then this map shuts down what it started
        if started:
            try:
                ray.init(address=self.address or None)
            except (ConnectionError, RuntimeError) as err:
                raise UserError(f"could not join the Ray cluster {self.address or '(default)'}: "
                                f"{one_line(err)}; check executor_options.address") from None
        remote = ray.remote(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                            max_retries=0)(run_job_process)
        waiting = [Path(d) for d in job_dirs]
        running: dict[Any, _Tail] = {}
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    job_dir = waiting.pop(0)
                    for stale in (RESULT_FILE, PROGRESS_FILE):  # no old progress is read
                        (job_dir / stale).unlink(missing_ok=True)
                    if on_start:
                        on_start(job_dir)
                    ref = remote.remote(job_dir, timeout_s, command=self.command)
                    running[ref] = _Tail(job_dir, on_progress)
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for tail in running.values():
                    tail.read()
                for ref in done:
                    tail = running.pop(ref)
                    result = _result(ray, ref)
                    tail.read()
                    if on_done:
                        on_done(tail.job_dir, result)
        except BaseException:
            for ref in running:  # KeyboardInterrupt in the task: run_job_process kills its group
                ray.cancel(ref)
            if running:  # wait (bounded) for them to end, so their workers are gone
                ray.wait(list(running), num_returns=len(running), timeout=30.0)
            raise
        finally:
            if started:  # stops a local cluster it started; only disconnects from a joined one
                ray.shutdown()


def _result(ray: Any, ref: Any) -> Result:
    """A finished task's result; a task that Ray lost (its worker process or node died) is a
    "killed" failure, while an exception in run_job_process itself propagates, as it would in
    the local executor."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        raise err.as_instanceof_cause() from None
    except ray.exceptions.RayError as err:
        return Result.failed("killed", f"the Ray task ended without a result: {one_line(err)}")


class _Tail:
    """progress.jsonl of one job, read from where the last read stopped."""

    def __init__(self, job_dir: Path, on_progress: Callable[[Path, dict], None] | None):
        self.job_dir = job_dir
        self.offset = 0
        self._report = (lambda p: on_progress(job_dir, p)) if on_progress else None

    def read(self) -> None:
        self.offset = read_progress(self.job_dir / PROGRESS_FILE, self.offset, self._report)

"""Training under candidate code in a child process the operating system confines.

`train_confined` (the caller's side, once train_adapter has filled the shared reference cache,
unconfined and with no candidate code) runs `python -m selfdisco.train.child REQUEST` confined
(losses/confine.py): it may write only its own directory, out_dir/confined/, reads the reference
cache read-only, and has no network. The caller reports the child's training log as progress
and, once the child has ended, copies what it made (metrics.json, train_log.jsonl, the adapter's
safetensors weights and JSON config) into out_dir as plain files, following no link the child
could have planted, and removes the child's directory.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfdisco.errors import one_line
from selfdisco.llm.models import resolve_model
from selfdisco.losses import confine
from selfdisco.losses.candidate import Candidate
from selfdisco.rundir.events import read_appended
from selfdisco.train.result import TRAIN_FAILED, TrainResult
from selfdisco.train.settings import TrainSettings

CHILD_DIR = "confined"
REQUEST_FILE = "request.json"
PAIRS_FILE = "pairs.jsonl"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MAX_COPY_BYTES = 4 << 30  # an adapter of a large model's every projection stays far below
POLL_S = 0.5

Progress = Callable[[int, int, dict[str, Any]], None]


def train_confined(*, model_path: str, dataset: Any, settings: TrainSettings, out_dir: Path,
                   candidate: Candidate, ref_cache_dir: str | Path | None,
                   progress: Progress | None, files: dict[str, str]) -> TrainResult:
    """train_adapter's work (its arguments; `files` names its adapter directory, metrics file
    and log file) with the candidate's code confined in a child process."""
    child_dir = out_dir / CHILD_DIR
    shutil.rmtree(child_dir, ignore_errors=True)
    child_dir.mkdir(parents=True)
    dataset.to_json(str(child_dir / PAIRS_FILE))
    request = {"model_path": resolve_model(model_path), "settings": settings.to_dict(),
               "name": candidate.name, "code": candidate.code,
               "ref_cache_dir": str(ref_cache_dir) if ref_cache_dir else None}
    (child_dir / REQUEST_FILE).write_text(json.dumps(request))
    argv, env = confine.command([sys.executable, "-m", "selfdisco.train.child",
                                 str(child_dir / REQUEST_FILE)], writable=[child_dir])
    with open(child_dir / "child.log", "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            _follow(proc, child_dir / files["log"], settings.max_steps, progress)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    result = _collect(child_dir, out_dir, files, proc.returncode)
    shutil.rmtree(child_dir, ignore_errors=True)
    return result


def _follow(proc: subprocess.Popen, log_path: Path, total: int, progress: Progress | None
            ) -> None:
    """Wait for the child, passing each logged step of its training log to `progress`."""
    offset = 0
    while True:
        finished = proc.poll() is not None
        if progress is not None and _plain_file(log_path):
            lines, offset = read_appended(log_path, offset)
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and "loss" in record:
                    progress(int(record.get("step") or 0), total, record)
        if finished:
            return
        time.sleep(POLL_S)


def _collect(child_dir: Path, out_dir: Path, files: dict[str, str], returncode: int
             ) -> TrainResult:
    """The child's result, its files copied into out_dir; a failed result if anything the
    child left is missing, not a plain file, or unreadable."""
    if _plain_file(child_dir / files["log"]):  # none when training never reached a step
        _copy_plain(child_dir / files["log"], out_dir / files["log"])
    try:
        _copy_plain(child_dir / files["metrics"], out_dir / files["metrics"])
        result = TrainResult.from_dict(json.loads((out_dir / files["metrics"]).read_text()))
    except (OSError, ValueError, TypeError) as err:
        log = _tail(child_dir / "child.log")
        return TrainResult(status=TRAIN_FAILED, error=f"the confined training process ended "
                           f"(exit status {returncode}) without a result: {log or one_line(err)}")
    adapter = out_dir / files["adapter"]
    shutil.rmtree(adapter, ignore_errors=True)
    if result.ok:
        try:
            adapter.mkdir(parents=True)
            for name in ADAPTER_FILES:
                _copy_plain(child_dir / files["adapter"] / name, adapter / name)
        except OSError as err:
            return TrainResult(status=TRAIN_FAILED, steps_done=result.steps_done,
                               metrics=result.metrics, error=f"the confined training left no "
                               f"usable adapter: {one_line(err)}")
        result.adapter_path = str(adapter)
    else:
        result.adapter_path = None
    return result


def _plain_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _copy_plain(source: Path, target: Path) -> None:
    """Copy a regular file without following a link at its path; OSError otherwise."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_COPY_BYTES:
            raise OSError(f"{source.name} is not a plain file of a sensible size")
        target.unlink(missing_ok=True)
        with os.fdopen(os.dup(fd), "rb") as reader, open(target, "xb") as writer:
            shutil.copyfileobj(reader, writer)
    finally:
        os.close(fd)


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""

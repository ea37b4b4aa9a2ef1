"""Run or resume a discovery run as a background process (the one the TUI watches).

`python -m selfdisco.launch.background RUN_DIR new|resume` runs the loop with its output in
RUN_DIR/run.log. `launch` starts it detached from the terminal; `run_locked` is the shared core
of the foreground and background paths: one process per run directory at a time.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.launch.start import start_run
from selfdisco.llm.server import sigterm_as_interrupt
from selfdisco.tui.printer import Printer

LOCK_FILE = ".lock"


@contextmanager
def run_lock(run_dir: Path):
    """Hold the run directory's lock; a second process on the same run is refused."""
    handle = open(Path(run_dir) / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{run_dir} is being run by another selfdisco process; watch it with "
                        f"`selfdisco tui {run_dir}`") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def run_locked(run_dir: Path, resume: bool, listeners: list | None = None) -> str:
    with run_lock(run_dir), sigterm_as_interrupt():
        return start_run(run_dir, resume=resume, listeners=listeners)


def launch(run_dir: Path, resume: bool) -> subprocess.Popen:
    """Start the run in a detached process group; its output goes to RUN_DIR/run.log."""
    log = open(Path(run_dir) / "run.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "selfdisco.launch.background", str(run_dir),
         "resume" if resume else "new"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir, mode = Path(argv[0]), argv[1]
    try:
        run_locked(run_dir, resume=mode == "resume", listeners=[Printer(run_dir=run_dir)])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

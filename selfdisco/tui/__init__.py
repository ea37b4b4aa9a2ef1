"""The terminal UI: watch and steer a discovery run from its event log.

Importing this package does not import Textual; `run_app` does, when called. The state model
(selfdisco.tui.state) and the event feed (selfdisco.tui.feed) never import it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def run_app(run_dir: Path, *, owns_run: bool = False,
            process: subprocess.Popen | None = None) -> str:
    """Show the TUI for the run in run_dir until the user closes it.

    Args:
        run_dir: the run directory (events.jsonl may not exist yet: the TUI waits for it).
        owns_run: the caller started the run; closing then asks whether to stop it or leave it
            running in the background.
        process: the run's process, if the caller started one; if it ends before the run
            finishes, the log pane says so and points to run.log.

    Returns:
        "stop" when the user asked to stop the run (the TUI has not sent anything: the caller
        stops its run), "detach" otherwise (the run, if still going, keeps going).
    """
    # lazy: loads textual
    from selfdisco.tui.app import DiscoApp

    result = DiscoApp(Path(run_dir), owns_run=owns_run, process=process).run()
    return result if result in ("stop", "detach") else "detach"

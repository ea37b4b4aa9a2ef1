"""Steering a running loop from outside (the TUI, another terminal): a control file of commands.

The TUI appends one JSON line per command to <run>/control.jsonl; the loop reads new lines at its
checkpoints (between stages) and records each command it obeys as a `control` event.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from selfdisco.rundir.events import read_appended

CONTROL_FILE = "control.jsonl"
COMMANDS = ("pause", "resume", "stop")  # stop = finish the current generation, then end


def send(run_dir: Path, command: str) -> None:
    """Ask the run in run_dir to pause, resume or stop."""
    if command not in COMMANDS:
        raise ValueError(f"unknown control command {command!r}; use one of {', '.join(COMMANDS)}")
    with open(Path(run_dir) / CONTROL_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"command": command, "t": round(time.time(), 3)}) + "\n")


def apply_command(command: str, paused: bool, stop_requested: bool) -> tuple[bool, bool]:
    """(paused, stop_requested) after `command`; a stop also ends a pause, to finish the
    generation."""
    if command == "pause":
        return True, stop_requested
    if command == "resume":
        return False, stop_requested
    if command == "stop":
        return False, True
    return paused, stop_requested


class ControlReader:
    """Reads commands appended since the last call."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / CONTROL_FILE
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def poll(self) -> list[str]:
        lines, self._offset = read_appended(self.path, self._offset)
        commands = []
        for line in lines:
            try:
                command = json.loads(line).get("command")
            except (ValueError, AttributeError):
                continue
            if command in COMMANDS:
                commands.append(command)
        return commands

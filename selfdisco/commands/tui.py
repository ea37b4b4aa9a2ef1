"""`selfdisco tui RUN_DIR`: watch a running discovery run, or browse a finished one."""

from __future__ import annotations

import argparse
import sys

from selfdisco.errors import UserError
from selfdisco.rundir.events import EVENTS_FILE
from selfdisco.rundir.paths import resolve_run
from selfdisco.tui import run_app

HELP = "watch a discovery run live, or browse a finished one, in the terminal"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="the run directory (checkpoints/<run-id>) or just the run id")


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run_dir, required=EVENTS_FILE)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError("selfdisco tui needs an interactive terminal; for a text summary of "
                        f"the run use `selfdisco report {run_dir}`")

    run_app(run_dir, owns_run=False)
    return 0

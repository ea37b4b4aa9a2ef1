"""`selfdisco resume RUN`: continue a run that was stopped or killed."""

from __future__ import annotations

import argparse

from selfdisco.commands.run import follow, wants_tui
from selfdisco.config import read_run_config
from selfdisco.launch.background import run_locked
from selfdisco.launch.checks import check_run
from selfdisco.launch.start import run_finished
from selfdisco.rundir.paths import resolve_run
from selfdisco.tui.printer import Printer

HELP = "continue a stopped or killed run where it left off"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="the run directory or its run id")
    parser.add_argument("--no-tui", action="store_true",
                        help="print progress lines instead of opening the terminal UI")


def run(args: argparse.Namespace) -> int:
    args.run_dir = resolve_run(args.run_dir)
    check_run(read_run_config(args.run_dir))  # not a run directory, or a bad setting: say so
    if run_finished(args.run_dir):
        print(f"{args.run_dir} has already finished; see `selfdisco report {args.run_dir}`")
        return 0
    if wants_tui(args):
        return follow(args.run_dir, resume=True)
    run_locked(args.run_dir, resume=True, listeners=[Printer(run_dir=args.run_dir)])
    return 0

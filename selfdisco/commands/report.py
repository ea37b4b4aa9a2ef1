"""`selfdisco report RUN`: a Markdown summary of a run with plots."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write report.md (ranking, fitness plot, top loss shapes) for a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN", help="the run directory")


def run(args: argparse.Namespace) -> int:
    from selfdisco.errors import UserError
    from selfdisco.report import write_report

    if not (args.run_dir / "archive.sqlite").exists():
        raise UserError(f"{args.run_dir} has no archive.sqlite: is it a selfdisco run directory?")
    path = write_report(args.run_dir)
    print(f"wrote {path}")
    return 0

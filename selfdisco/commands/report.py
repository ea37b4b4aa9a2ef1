"""`selfdisco report RUN`: a Markdown summary of a run with plots."""

from __future__ import annotations

import argparse

HELP = "write report.md (ranking, fitness plot, top loss shapes) for a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="the run directory or its run id")


def run(args: argparse.Namespace) -> int:
    from selfdisco.archive import ARCHIVE_FILE
    from selfdisco.paths import resolve_run
    from selfdisco.report import write_report

    path = write_report(resolve_run(args.run_dir, required=ARCHIVE_FILE))
    print(f"wrote {path}")
    return 0

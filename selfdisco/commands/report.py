"""`selfdisco report RUN`: a Markdown summary of a run with plots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.formatting import print_json
from selfdisco.report import write_report
from selfdisco.rundir.archive import ARCHIVE_FILE, Archive
from selfdisco.rundir.events import SCORED
from selfdisco.rundir.paths import resolve_run

HELP = "write report.md (ranking, fitness plot, top loss shapes) for a run"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="the run directory or its run id")
    parser.add_argument("--json", action="store_true",
                        help="also print the ranking as JSON (report.md is written either way)")


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run_dir, required=ARCHIVE_FILE)
    path = write_report(run_dir)
    if args.json:
        print_json({"run": run_dir.name, "run_dir": run_dir, "report": path,
                    "ranking": ranking(run_dir)})
    else:
        print(f"wrote {path}")
    return 0


def ranking(run_dir: Path) -> list[dict[str, Any]]:
    """The scored rows, best fitness first, with the standard errors, ties and wins over dpo
    of the report (stats.TIE_RULE, stats.BETTER_RULE)."""
    archive = Archive(run_dir)
    scored = sorted((r for r in archive.rows() if r.status == SCORED), key=lambda r: -r.fitness)
    archive.close()
    comparison = stats.compare(scored)
    if comparison is None:
        return []
    out = []
    for r in scored:
        to_dpo = comparison.to_reference.get(r.id)
        out.append({"id": r.id, "name": r.name, "kind": r.kind, "generation": r.generation,
                    "fitness": r.fitness, "stderr": stats.row_stderr(r, comparison.pooled),
                    "tied_with_best": r.id in comparison.tied,
                    "better_than_dpo": r.id in comparison.better, "kl": r.metrics.get("kl"),
                    "vs_dpo": None if to_dpo is None else {
                        "difference": to_dpo.mean, "stderr": to_dpo.stderr, "df": to_dpo.df,
                        "seeds": to_dpo.n_seeds, "p_value": to_dpo.p_value(),
                        "omitted": list(to_dpo.omitted)},
                    "proposer": r.proposer})
    return out

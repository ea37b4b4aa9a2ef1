"""Runs that differ only in discovery.self_improve, side by side: per generation, each run's
proposer, valid-and-novel rate and mean fitness of its proposals; then the pooled rates after
generation 1 (the first generation is the base proposer's in every mode) and each mode's
difference to the first run's, with its standard error and Fisher's exact test (the binomial
standard error is 0 at a rate of 0 or 1, so z alone would overstate small counts); then each
run's duels.

Run: python scripts/compare_self_improve.py checkpoints/RUN_OFF checkpoints/RUN_POLICY ...
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from scipy.stats import fisher_exact

from selfdisco.config import read_run_config
from selfdisco.discovery.proposer import lineage
from selfdisco.discovery.proposer.duel import DuelRecord
from selfdisco.rundir.archive import Archive


def load(run_dir: Path) -> tuple[str, list, dict]:
    if not (run_dir / "archive.sqlite").exists():
        sys.exit(f"{run_dir} has no archive.sqlite: give run directories (checkpoints/NAME)")
    mode = read_run_config(run_dir).discovery.self_improve
    archive = Archive(run_dir)
    try:
        return mode, archive.rows(), archive.duels()
    finally:
        archive.close()


def pooled(rows: list, after: int) -> lineage.Figures:
    figures = lineage.Figures("pooled")
    for row in lineage.proposals(rows):
        if row.generation > after:
            figures.add(row)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    runs = [(run.name, *load(run)) for run in args.runs]
    names = " | ".join(f"{name} ({mode})" for name, mode, _, _ in runs)
    print(f"| generation | {names} |")
    print("|---|" + "---|" * len(runs))
    per_run = [lineage.by_generation(rows) for _, _, rows, _ in runs]
    for g in sorted(set().union(*per_run)):
        cells = []
        for figures in per_run:
            f = figures.get(g)
            cells.append("-" if f is None else
                         f"{f.proposer}: {f.valid_novel.text()}; {f.fitness_text()}")
        print(f"| {g} | " + " | ".join(cells) + " |")
    print("\nAfter generation 1 (pooled answers; difference to the first run, s.e. of two "
          "independent rates):")
    first = pooled(runs[0][2], 1).valid_novel
    for name, mode, rows, _ in runs:
        f = pooled(rows, 1)
        line = f"- {name} ({mode}): valid and novel {f.valid_novel.text()}; {f.fitness_text()}"
        rate = f.valid_novel
        if rate.n and first.n and name != runs[0][0]:
            se = math.sqrt(rate.stderr ** 2 + first.stderr ** 2)
            diff = rate.value - first.value
            table = [[rate.count, rate.n - rate.count], [first.count, first.n - first.count]]
            p = fisher_exact(table).pvalue
            line += f"; difference {diff:+.2f} ± {se:.2f}, Fisher's exact p {p:.3g}"
        print(line)
    for name, mode, _, duels in runs:
        for _, duel in sorted(duels.items()):
            print(f"- duel in {name} ({mode}): {DuelRecord.from_json(duel).summary()}")


if __name__ == "__main__":
    main()

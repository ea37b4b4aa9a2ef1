"""`selfdisco export RUN [ID]`: a discovered loss as loss.py, trainer.py and its recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfdisco.export.build import build_recipe, write_export
from selfdisco.export.recipe import EXPORT_DIR
from selfdisco.formatting import format_fitness, print_json
from selfdisco.rundir.archive import ARCHIVE_FILE
from selfdisco.rundir.paths import resolve_run

HELP = "write a discovered loss as a standalone function, a TRL trainer and its exact recipe"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="the run directory or its run id")
    parser.add_argument("id", nargs="?", metavar="ID",
                        help="the candidate's id, e.g. g02-c1 or burn-dpo (default: the best "
                             "scored loss)")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: RUN/export/ID)")
    parser.add_argument("--json", action="store_true",
                        help="print what was written as JSON")


def run(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.run_dir, required=ARCHIVE_FILE)
    recipe = build_recipe(run_dir, args.id)
    out_dir = Path(args.out) if args.out else run_dir / EXPORT_DIR / recipe.id
    files = write_export(recipe, out_dir)
    fitness = format_fitness(recipe.fitness, recipe.stderr, missing="none")
    if args.json:
        print_json({"run": run_dir.name, "id": recipe.id, "name": recipe.name,
                    "picked": "best" if args.id is None else "given", "fitness": recipe.fitness,
                    "stderr": recipe.stderr, "n": recipe.n,
                    "trl_loss_type": recipe.trl_loss_type or None, "out_dir": out_dir,
                    "files": files, "pairs_digest": recipe.pairs_digest or None})
        return 0
    if args.id is None:
        print(f"picked {recipe.id} ({recipe.name}), the best scored loss of {run_dir.name}: "
              f"fitness {fitness} (n={recipe.n})")
    else:
        print(f"{recipe.id} ({recipe.name}): fitness {fitness} (n={recipe.n})")
    if recipe.trl_loss_type:
        print(f'it trains like TRL\'s built-in loss_type="{recipe.trl_loss_type}"')
    if not recipe.pairs_digest:
        print("note: the preference pairs are not in the task's cache; `selfdisco train --from` "
              "makes them again from the task seed")
    for path in files:
        print(f"wrote {path}")
    print(f"train it again: selfdisco train --from {out_dir}")
    return 0

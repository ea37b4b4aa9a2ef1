"""`selfdisco train --from RUN:ID|DIR`: train a discovered loss again with the exact recipe that
produced its fitness, score it with the same task settings, and compare with the recorded
fitness (the --from half of selfdisco/commands/train.py)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from selfdisco.commands.eval import preset_model
from selfdisco.errors import UserError
from selfdisco.export.build import resolve_source
from selfdisco.export.reproduce import reproduce
from selfdisco.formatting import format_difference, format_fitness, print_json
from selfdisco.llm.endpoint import open_llm
from selfdisco.rundir.events import SCORED
from selfdisco.rundir.paths import checkpoints_dir

# Options that would change the recipe: --from trains it as it was.
RECIPE_OPTIONS = ("loss", "data", "task", "model", "steps", "learning_rate", "beta", "seed")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", metavar="RUN:ID|DIR",
                        help="train a run's candidate again with the recipe that produced its "
                             "fitness (RUN a run directory or run id), or an export directory "
                             "(selfdisco export), and score it as the run did")
    parser.add_argument("--server", metavar="URL",
                        help="with --from: score on a running vLLM server that serves the "
                             "recipe's model with LoRA (default: start one)")
    parser.add_argument("--judge", metavar="URL",
                        help="with --from, a judged task: the judge's server (default: the "
                             "policy's)")
    parser.add_argument("--judge-model", help="with --from: the judge's model name on --judge")


def run(args: argparse.Namespace) -> int:
    given = [f"--{name.replace('_', '-')}" for name in RECIPE_OPTIONS
             if getattr(args, name, None) is not None]
    if given:
        raise UserError(f"--from trains the recorded recipe as it was; leave out "
                        f"{', '.join(given)} (or train with --loss and --data instead)")
    recipe = resolve_source(args.source)
    out_dir = Path(args.out) if args.out else (
        checkpoints_dir() / "train" / f"{recipe.id}-from-{time.strftime('%Y%m%d-%H%M%S')}")
    ref_cache = None if args.no_ref_cache else (
        Path(args.ref_cache) if args.ref_cache else checkpoints_dir() / "cache" / "refcache")
    t = recipe.train
    say = sys.stderr if args.json else sys.stdout
    print(f"training {recipe.name} ({recipe.id} of {recipe.run}) with its recipe: "
          f"{recipe.model_path}, lr {t.learning_rate:g}, beta {t.beta:g}, {t.max_steps} steps, "
          f"seeds {', '.join(map(str, recipe.train_seeds))}; {recipe.task} task "
          f"({recipe.task_preset}) -> {out_dir}", file=say)
    reproduction = _reproduce(args, recipe, out_dir, ref_cache)
    result, recorded, difference = (reproduction.result, reproduction.recorded,
                                    reproduction.difference)
    if args.json:
        print_json({"id": recipe.id, "name": recipe.name, "run": recipe.run, "out_dir": out_dir,
                    "result": result.to_dict(),
                    "recorded": recorded.to_dict() if recorded else None,
                    "difference": None if difference is None else {
                        "mean": difference.mean, "stderr": difference.stderr,
                        "paired": difference.paired},
                    "within_stderr": reproduction.within_stderr})
        return 0 if result.status == SCORED else 1
    if result.status != SCORED:
        print(f"status: {result.status} ({result.reason})")
        return 1
    n = result.metrics.get("n")
    print(f"fitness  {format_fitness(result.fitness, result.stderr)}"
          + (f" (n={n})" if n is not None else ""))
    if recorded is not None and recorded.status == SCORED:
        print(f"recorded {format_fitness(recorded.fitness, recorded.stderr)}")
    if difference is not None:
        kind = ("blocked by training seed, paired over prompts" if difference.paired
                else "unpaired")
        print(f"difference to the recorded fitness: {format_difference(difference)} ({kind})")
        verdict = "within" if reproduction.within_stderr else "outside"
        print(f"reproduced: {verdict} the recorded standard error")
    print(f"adapter: {result.adapter}")
    return 0


def _reproduce(args, recipe, out_dir, ref_cache):
    """Open the policy's server (and the judge's), then train and score."""
    if args.server:
        policy = open_llm(args.server, option="--server")
    else:
        _, server_config = preset_model(recipe.task_preset)
        options = {"check_numerics": True, "dtype": recipe.dtype,
                   "max_lora_rank": max(16, recipe.train.lora_r)}
        if server_config.get("max_model_len"):
            options["max_model_len"] = int(server_config["max_model_len"])
        print(f"starting vLLM for {recipe.model_path} (log: {checkpoints_dir() / 'serve'})",
              file=sys.stderr)
        policy = open_llm("local", model_path=recipe.model_path, server_options=options)
    judge = (open_llm(args.judge, option="--judge", model=args.judge_model) if args.judge
             else None)
    try:
        return reproduce(recipe, server_url=policy.client.base_url,
                         served_model=policy.client.model, out_dir=out_dir,
                         cache_dir=checkpoints_dir() / "cache", ref_cache_dir=ref_cache,
                         judge_url=judge.client.base_url if judge else "",
                         judge_model=judge.client.model if judge else "")
    finally:
        if judge is not None:
            judge.close()
        policy.close()

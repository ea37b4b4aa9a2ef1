"""`selfdisco train`: LoRA preference training under a catalog loss or a loss file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from selfdisco.commands import train_from
from selfdisco.config import RunConfig
from selfdisco.errors import UserError
from selfdisco.formatting import format_rate, print_json
from selfdisco.losses import load_loss, screen
from selfdisco.presets import DEFAULT_PRESET, PRESETS
from selfdisco.rundir.paths import checkpoints_dir
from selfdisco.tasks import preset_training, task_names
from selfdisco.train.data import load_preferences
from selfdisco.train.settings import TrainSettings

HELP = "train a LoRA adapter on preference data under a loss (catalog name or file)"

# Flags that change one setting of the recipe: argparse dest -> TrainSettings field.
SETTING_FLAGS = {"steps": "max_steps", "learning_rate": "learning_rate", "beta": "beta",
                 "seed": "seed"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loss", metavar="NAME|FILE",
                        help="a catalog loss (see `selfdisco losses`), a .py file with one loss "
                             "function, or a .json candidate file")
    parser.add_argument("--data", metavar="ID|PATH",
                        help="preference pairs with prompt/chosen/rejected columns: a "
                             ".jsonl/.json/.csv/.parquet file or a Hugging Face dataset, "
                             "ORG/NAME[:CONFIG[:SPLIT]]")
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                        help="train as discovery does on this preset: its task's training "
                             f"recipe and its policy (default: {DEFAULT_PRESET})")
    parser.add_argument("--task", choices=task_names(),
                        help="the task whose recipe for the preset to train with (default: "
                             "the preset's task)")
    parser.add_argument("--model", metavar="NAME|PATH",
                        help="base model: a bundled name, a local path or a hub id "
                             "(default: the preset's policy)")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: checkpoints/train/<loss>-<time>)")
    parser.add_argument("--steps", type=int, metavar="N", help="optimizer steps (override)")
    parser.add_argument("--learning-rate", type=float, metavar="LR",
                        help="the adapter's AdamW learning rate (override)")
    parser.add_argument("--beta", type=float, help="the loss's beta (override)")
    parser.add_argument("--seed", type=int, help="seed (override)")
    parser.add_argument("--split", default="train",
                        help="split of a hub dataset when --data names none (default: train)")
    parser.add_argument("--ref-cache", metavar="DIR",
                        help="reference log-prob cache (default: checkpoints/cache/refcache)")
    parser.add_argument("--no-ref-cache", action="store_true",
                        help="compute reference log-probs every step instead of caching them")
    train_from.add_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON (progress goes to stderr)")


def run(args: argparse.Namespace) -> int:
    if args.source:
        return train_from.run(args)
    if not (args.loss and args.data):
        raise UserError("give --loss and --data, or --from RUN:ID to train a run's candidate "
                        "again with its recipe")
    candidate = load_loss(args.loss)
    config, settings = train_recipe(args)
    data = load_preferences(args.data, split=args.split)
    screened = screen(candidate)
    if not screened.ok:
        raise UserError(f"the loss {candidate.name!r} failed screening: {screened.reason}")

    model = args.model or config.models.policy
    task = config.task.name
    run_name = f"{candidate.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(args.out) if args.out else checkpoints_dir() / "train" / run_name
    ref_cache = None if args.no_ref_cache else (
        Path(args.ref_cache) if args.ref_cache else checkpoints_dir() / "cache" / "refcache")
    say = sys.stderr if args.json else sys.stdout
    print(f"training {candidate.name} on {len(data)} pairs: {model}, preset {args.preset}, "
          f"the {task} task's recipe (lr {settings.learning_rate:g}, beta {settings.beta:g}, "
          f"{settings.max_steps} steps, lengths {settings.max_length}/"
          f"{settings.max_prompt_length}) -> {out_dir}", file=say)
    result = _train(model, candidate, data, settings, out_dir, ref_cache)
    if args.json:
        print_json({"loss": candidate.name, "model": model, "preset": args.preset, "task": task,
                    "settings": settings.recipe(), "pairs": len(data), "out_dir": out_dir,
                    **result.to_dict()})
        return 0 if result.ok else 1
    print(f"status: {result.status}" + (f" ({result.error})" if result.error else ""))
    if result.seconds_per_step is not None:
        print(f"steps: {result.steps_done}, {result.seconds_per_step:.3f} s/step, "
              f"peak RSS {result.peak_rss_mb:.0f} MiB")
    metrics = result.metrics
    if "rewards/accuracies" in metrics:
        print(f"last step: loss {metrics.get('loss')}, reward accuracy "
              f"{format_rate(metrics['rewards/accuracies'])}, "
              f"margin {metrics['rewards/margins']:.4f}")
    if result.adapter_path:
        print(f"adapter: {result.adapter_path}")
    print(f"metrics: {out_dir / 'metrics.json'}, log: {out_dir / 'train_log.jsonl'}")
    return 0 if result.ok else 1


def train_recipe(args: argparse.Namespace) -> tuple[RunConfig, TrainSettings]:
    """The preset's config (its task, or --task) and the recipe discovery trains with on them
    (selfdisco.tasks.preset_training), with the settings the flags give on top."""
    config, settings = preset_training(args.preset, args.task)
    for dest, setting in SETTING_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            try:
                settings = settings.with_overrides(**{setting: value})
            except UserError as err:
                raise UserError(f"--{dest.replace('_', '-')} {value}: {err}") from None
    return config, settings


def _train(model, candidate, data, settings, out_dir, ref_cache):
    # lazy: loads datasets, transformers
    import datasets
    import transformers

    from selfdisco.train.adapter import train_adapter  # lazy: loads torch

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    with tqdm(total=settings.max_steps, desc="training", unit="step") as bar:
        def progress(step: int, total: int, logs: dict) -> None:
            bar.update(step - bar.n)
            if logs.get("loss") is not None:
                bar.set_postfix(loss=f"{logs['loss']:.4f}",
                                acc=format_rate(logs.get('rewards/accuracies', 0)))

        return train_adapter(model_path=model, candidate=candidate, data=data,
                             settings=settings, out_dir=out_dir, ref_cache_dir=ref_cache,
                             progress=progress)

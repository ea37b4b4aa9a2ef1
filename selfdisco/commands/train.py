"""`selfdisco train`: LoRA preference training under a catalog loss or a loss file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from selfdisco.commands import train_from
from selfdisco.errors import UserError
from selfdisco.formatting import print_json
from selfdisco.losses import load_loss, screen
from selfdisco.rundir.paths import checkpoints_dir
from selfdisco.train.data import load_preferences
from selfdisco.train.settings import PRESET_MODELS, TrainSettings

HELP = "train a LoRA adapter on preference data under a loss (catalog name or file)"

PRESET_CHOICES = ("smoke", "cpu", "gpu-zephyr", "gpu-selfimprove")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loss", metavar="NAME|FILE",
                        help="a catalog loss (see `selfdisco losses`), a .py file with one loss "
                             "function, or a .json candidate file")
    parser.add_argument("--data", metavar="ID|PATH",
                        help="preference pairs with prompt/chosen/rejected columns: a "
                             ".jsonl/.json/.csv/.parquet file or a Hugging Face dataset, "
                             "ORG/NAME[:CONFIG[:SPLIT]]")
    parser.add_argument("--preset", choices=PRESET_CHOICES, default="cpu",
                        help="training recipe and default model (default: cpu)")
    parser.add_argument("--model", metavar="NAME|PATH",
                        help="base model: a bundled name, a local path or a hub id "
                             "(default: the preset's policy)")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: checkpoints/train/<loss>-<time>)")
    parser.add_argument("--steps", type=int, metavar="N", help="optimizer steps (override)")
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
    overrides = {"max_steps": args.steps, "beta": args.beta, "seed": args.seed}
    settings = TrainSettings.for_preset(args.preset).with_overrides(
        **{k: v for k, v in overrides.items() if v is not None})
    if settings.max_steps < 1:
        raise UserError("--steps must be at least 1")
    data = load_preferences(args.data, split=args.split)
    screened = screen(candidate)
    if not screened.ok:
        raise UserError(f"the loss {candidate.name!r} failed screening: {screened.reason}")

    model = args.model or PRESET_MODELS[args.preset]
    run_name = f"{candidate.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(args.out) if args.out else checkpoints_dir() / "train" / run_name
    ref_cache = None if args.no_ref_cache else (
        Path(args.ref_cache) if args.ref_cache else checkpoints_dir() / "cache" / "refcache")
    print(f"training {candidate.name} on {len(data)} pairs: {model}, preset {args.preset}, "
          f"{settings.max_steps} steps -> {out_dir}", file=sys.stderr if args.json else sys.stdout)
    result = _train(model, candidate, data, settings, out_dir, ref_cache)
    if args.json:
        print_json({"loss": candidate.name, "model": model, "preset": args.preset,
                    "pairs": len(data), "out_dir": out_dir, **result.to_dict()})
        return 0 if result.ok else 1
    print(f"status: {result.status}" + (f" ({result.error})" if result.error else ""))
    if result.seconds_per_step is not None:
        print(f"steps: {result.steps_done}, {result.seconds_per_step:.3f} s/step, "
              f"peak RSS {result.peak_rss_mb:.0f} MiB")
    metrics = result.metrics
    if "rewards/accuracies" in metrics:
        print(f"last step: loss {metrics.get('loss')}, reward accuracy "
              f"{metrics['rewards/accuracies']:.2f}, margin {metrics['rewards/margins']:.4f}")
    if result.adapter_path:
        print(f"adapter: {result.adapter_path}")
    print(f"metrics: {out_dir / 'metrics.json'}, log: {out_dir / 'train_log.jsonl'}")
    return 0 if result.ok else 1


def _train(model, candidate, data, settings, out_dir, ref_cache):
    # lazy: loads datasets, transformers
    import datasets
    import transformers

    from selfdisco.train.runner import train_adapter  # lazy: loads torch

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    with tqdm(total=settings.max_steps, desc="training", unit="step") as bar:
        def progress(step: int, total: int, logs: dict) -> None:
            bar.update(step - bar.n)
            if logs.get("loss") is not None:
                bar.set_postfix(loss=f"{logs['loss']:.4f}",
                                acc=f"{logs.get('rewards/accuracies', 0):.2f}")

        return train_adapter(model_path=model, candidate=candidate, data=data,
                             settings=settings, out_dir=out_dir, ref_cache_dir=ref_cache,
                             progress=progress)

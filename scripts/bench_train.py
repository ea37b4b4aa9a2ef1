"""Seconds per training step: TRL's built-in "sigmoid" loss against the runtime dpo loss, and the
runtime loss with and without the shared reference log-prob cache.

Same model, data and recipe for every configuration; each is trained `--rounds` times in
alternating order (fresh trainer each time), the first step of each run is left out, and the
median step time is reported. Targets: runtime / TRL at most 1.05; the cache faster than none.

    python scripts/bench_train.py                      # SmolLM2-135M, the cpu recipe
    python scripts/bench_train.py --model smoke-llama --preset smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CONFIGS = ("trl sigmoid", "runtime dpo", "runtime dpo + cache")


def preference_pairs(n: int) -> list[dict]:
    """Short review-style pairs, the shape of the sentiment task's data."""
    good = ["a warm, funny and moving story", "brilliant acting and a clever script",
            "a joy from start to finish", "beautifully shot and deeply felt"]
    bad = ["a dull, tedious mess", "wooden acting and a lazy script",
           "a chore to sit through", "ugly to look at and hollow inside"]
    return [{"prompt": f"Review #{i}: I watched this film last night and",
             "chosen": f" it was {good[i % 4]}.", "rejected": f" it was {bad[(i + 1) % 4]}."}
            for i in range(n)]


def train_timed(trainer) -> tuple[list[float], list[float]]:
    """Train; return the wall time of each optimizer step after the first, and every loss."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    timer = Timer()
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(timer)
    trainer.train()
    return timer.times[1:], timer.losses


def interleaved_step_times(trainers: dict, repeats: int) -> dict[str, list[float]]:
    """Forward + backward of each trainer's loss on the same fixed batch, taken in turns, so
    slow drifts of the machine hit every configuration alike."""
    import torch

    batches = {}
    for config, trainer in trainers.items():
        rows = [trainer.train_dataset[i] for i in range(trainer.args.per_device_train_batch_size)]
        batches[config] = trainer._prepare_inputs(trainer.data_collator(rows))
        trainer.model.train()
    times: dict[str, list[float]] = {config: [] for config in trainers}
    for repeat in range(repeats + 1):
        for config, trainer in trainers.items():
            started = time.perf_counter()
            loss = trainer.compute_loss(trainer.model, batches[config])
            loss.backward()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if repeat:  # the first round warms up
                times[config].append(time.perf_counter() - started)
            trainer.model.zero_grad(set_to_none=True)
    return times


def build(config: str, args, dataset, cache_dir: Path, out_dir: Path):
    from trl import DPOTrainer

    from selfdisco.losses import catalog, compile_loss
    from selfdisco.tasks import preset_training
    from selfdisco.train.adapter import trainer_parts
    from selfdisco.train.refcache import RefCache, model_identity
    from selfdisco.train.trainer import RuntimeLossDPOTrainer

    _, settings = preset_training(args.preset)  # the recipe discovery trains with on the preset
    settings = settings.with_overrides(
        max_steps=args.steps, batch_size=args.batch, max_length=args.max_length,
        max_prompt_length=None)  # TRL's own trainer has no prompt cut: keep inputs identical
    if args.cuda:
        settings = settings.with_overrides(use_cpu=False, bf16=True)
    parts = trainer_parts(args.model, settings, out_dir, loss_type="sigmoid")
    common = {"args": parts["args"], "train_dataset": dataset,
              "processing_class": parts["tokenizer"], "peft_config": parts["peft_config"]}
    if config == "trl sigmoid":
        return DPOTrainer(parts["model"], **common)
    cache = RefCache(cache_dir) if config.endswith("cache") else None
    return RuntimeLossDPOTrainer(parts["model"], loss_fn=compile_loss(catalog.get("dpo")
                                                                      .candidate.code),
                                 ref_cache=cache, model_identity=model_identity(parts["path"]),
                                 **common)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--preset", default="cpu", help="training recipe (lr, LoRA rank, ...)")
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--steps", type=int, default=6, help="steps per run (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10,
                        help="turns of the interleaved fixed-batch comparison")
    parser.add_argument("--cuda", action="store_true", help="train on the GPU in bf16")
    args = parser.parse_args()

    import datasets
    import torch
    import transformers
    from datasets import Dataset

    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    dataset = Dataset.from_list(preference_pairs(args.pairs))
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if args.cuda else f"CPU, {threads} threads"
    print(f"model {args.model}, {args.pairs} pairs, batch {args.batch}, max length "
          f"{args.max_length}, {args.steps} steps x {args.rounds} rounds, {device}, "
          f"load average {os.getloadavg()[0]:.1f}")

    times: dict[str, list[float]] = {config: [] for config in CONFIGS}
    losses: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "refcache"
        started = time.perf_counter()
        build("runtime dpo + cache", args, dataset, cache_dir, Path(tmp) / "warm")
        print(f"reference cache: computed in {time.perf_counter() - started:.1f} s "
              "(model load and tokenization included), once per model and data")
        for round_index in range(args.rounds):
            order = CONFIGS if round_index % 2 == 0 else tuple(reversed(CONFIGS))
            for config in order:
                started = time.perf_counter()
                trainer = build(config, args, dataset, cache_dir, Path(tmp) / "run")
                setup = time.perf_counter() - started
                step_seconds, losses[config] = train_timed(trainer)
                times[config] += step_seconds
                print(f"  round {round_index + 1} {config:20} set-up {setup:5.1f} s, "
                      f"steps {', '.join(f'{t:.3f}' for t in times[config][-args.steps + 1:])}")
                del trainer
                if args.cuda:
                    torch.cuda.empty_cache()

        trainers = {config: build(config, args, dataset, cache_dir, Path(tmp) / "fixed")
                    for config in CONFIGS}
        fixed = interleaved_step_times(trainers, args.repeats)

    print()
    for config in CONFIGS:
        print(f"loss + backward, fixed batch, {config:20} "
              f"{statistics.median(fixed[config]):.4f} s (median of {args.repeats})")
    ratio = statistics.median(fixed["runtime dpo"]) / statistics.median(fixed["trl sigmoid"])
    print(f"  runtime dpo / TRL sigmoid on the fixed batch: {ratio:.3f}")
    print()
    median = {config: statistics.median(values) for config, values in times.items()}
    for config in CONFIGS:
        print(f"{config:22} {median[config]:.4f} s/step (median of {len(times[config])}, "
              f"mean {statistics.mean(times[config]):.4f})")
    gap = max(abs(a - b) for a, b in zip(losses["trl sigmoid"], losses["runtime dpo"],
                                         strict=True))
    print(f"same training, same losses: max |TRL sigmoid - runtime dpo| over "
          f"{len(losses['trl sigmoid'])} steps = {gap:.2e}")
    ratio = median["runtime dpo"] / median["trl sigmoid"]
    print(f"runtime dpo / TRL sigmoid: {ratio:.3f} (target <= 1.05: "
          f"{'met' if ratio <= 1.05 else 'NOT met'})")
    speedup = median["runtime dpo"] / median["runtime dpo + cache"]
    print(f"no cache / cache: {speedup:.2f}x ({'faster' if speedup > 1 else 'NOT faster'} "
          "with the cache)")


if __name__ == "__main__":
    main()

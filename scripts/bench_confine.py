"""What confining candidate code costs: screening, a digits evaluation and a training job, each
confined (SELFDISCO_CONFINE=require) and unconfined (off), in one sitting on this machine.

    .venv/bin/python scripts/bench_confine.py [--rounds 5] [--model smollm2-135m-instruct]

- screening: seconds per verdict on a warm sandbox server (the catalog's losses), and the
  server's cold start (bubblewrap and sealing happen once per server, not per candidate);
- digits: seconds per evaluation of cross-entropy (the task's default settings) on a warm
  evaluation server, against training in this process as the evaluator did before candidates
  got a child each;
- training: seconds per training job under dpo with the cpu recipe, the reference cache warm;
  confined, the job is a child process that imports torch and transformers itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from selfdisco.losses import catalog, confine, screen
from selfdisco.losses.sandbox import Sandbox
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.digits.screening import CATALOG as DIGITS_CATALOG
from selfdisco.tasks.digits.task import (
    DigitsSettings,
    Evaluations,
    compile_classification_loss,
    train_and_score,
)


def timed(function, rounds: int) -> list[float]:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def summary(seconds: list[float]) -> str:
    return (f"median {statistics.median(seconds):.3f} s, min {min(seconds):.3f}, "
            f"max {max(seconds):.3f} (n={len(seconds)})")


def bench_screening(rounds: int) -> None:
    losses = [catalog.get(name).candidate for name in catalog.names()]
    started = time.perf_counter()
    sandbox = Sandbox()
    sandbox.wait_ready()
    cold = time.perf_counter() - started
    try:
        seconds = []
        for _ in range(rounds):
            for candidate in losses:
                result = screen(candidate, sandbox=sandbox)
                assert result.ok, result.reason
                seconds.append(result.seconds)
    finally:
        sandbox.close()
    print(f"  screening: server cold start {cold:.2f} s; per verdict {summary(seconds)}")


def bench_digits(rounds: int) -> None:
    code = DIGITS_CATALOG["cross_entropy"][1]
    with Evaluations() as evaluations:
        evaluations.run(code, {}, 0)  # warm: the server's start and the data's first load
        seconds = timed(lambda: evaluations.run(code, {}, 0), rounds)
    print(f"  digits: per evaluation {summary(seconds)}")


def bench_digits_in_process(rounds: int) -> None:
    loss_fn = compile_classification_loss(DIGITS_CATALOG["cross_entropy"][1])
    train_and_score(loss_fn, DigitsSettings())
    seconds = timed(lambda: train_and_score(loss_fn, DigitsSettings()), rounds)
    print(f"  digits, in this process (no child, no confinement): per evaluation "
          f"{summary(seconds)}")


def bench_training(rounds: int, model: str, work: Path) -> None:
    from selfdisco.tasks import preset_training
    from selfdisco.train.adapter import train_adapter

    _, settings = preset_training("cpu", "sentiment")
    pairs = [{"prompt": f"Review {i}: this film is", "chosen": " a joy to watch",
              "rejected": " a bore from start to end"} for i in range(64)]
    candidate = catalog.get("dpo").candidate

    def job() -> None:
        result = train_adapter(model_path=model, data=pairs, settings=settings,
                               out_dir=work / "job", candidate=candidate,
                               ref_cache_dir=work / "refcache")
        assert result.ok, result.error

    job()  # warm: the reference cache and the page cache
    print(f"  training ({model}, cpu recipe, {settings.max_steps} steps): per job "
          f"{summary(timed(job, rounds))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    print(f"confinement here: {confine.status('auto').describe()}")
    get_task("digits").settings(TaskContext())
    for policy in ("require", "off"):
        os.environ[confine.POLICY_ENV] = policy
        print(f"SELFDISCO_CONFINE={policy}")
        bench_screening(args.rounds)
        bench_digits(args.rounds)
        if not args.skip_training:
            with tempfile.TemporaryDirectory(prefix="bench-confine-") as work:
                bench_training(max(2, args.rounds // 2), args.model, Path(work))
    bench_digits_in_process(args.rounds)


if __name__ == "__main__":
    main()

"""Seconds per digits evaluation: cross-entropy and a deliberately poor loss, three runs each.

Run: python scripts/bench_digits.py. Target: one evaluation well under 30 s on 2 CPU cores.
"""

from __future__ import annotations

import statistics
import time

from selfdisco.tasks import TaskContext, get_task

POOR = '''
def ignores_targets(logits, targets):
    return (logits ** 2).mean(dim=1)
'''


def main() -> None:
    task = get_task("digits")
    ctx = TaskContext(options={"max_seconds": 600.0})
    task.score(ctx)  # warm-up: imports and the data load
    for label, loss in (("cross_entropy", None), ("ignores_targets", POOR)):
        seconds, fitness = [], None
        for _ in range(3):
            started = time.perf_counter()
            fitness = task.score(ctx) if loss is None else task.evaluate_loss(ctx, loss)
            seconds.append(time.perf_counter() - started)
        print(f"{label:16s} accuracy {fitness.summary()}  seconds per evaluation: "
              f"median {statistics.median(seconds):.2f}, max {max(seconds):.2f}")


if __name__ == "__main__":
    main()

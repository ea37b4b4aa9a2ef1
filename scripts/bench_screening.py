"""Time from candidate text (an LLM-style answer) to screening verdict.

    .venv/bin/python scripts/bench_screening.py [--rounds 3]

Candidates: every catalog loss plus the broken and hostile ones in tests/hostile/, each wrapped
as an LLM answer (prose and a fenced JSON object). The endless loops are left out: by design
they take exactly the timeout. Prints the sandbox's cold start, then the median and p90 over
the warm runs, overall and by kind of verdict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from selfdisco.losses import Candidate, catalog, screen_text
from selfdisco.losses.sandbox import Sandbox
from selfdisco.losses.static import CodeRejected, check_code

HOSTILE = Path(__file__).resolve().parent.parent / "tests" / "hostile"
SLOW_BY_DESIGN = {"endless_loop", "endless_tensor_loop", "huge_integer_power"}


def answer(candidate: Candidate) -> str:
    return ("Building on the results so far, here is my next proposal.\n```json\n"
            + json.dumps(candidate.to_dict(), indent=2) + "\n```\n")


def candidates() -> list[tuple[str, str, str]]:
    """(name, kind, answer text) for every benchmarked candidate."""
    items = [(name, "passes", answer(catalog.get(name).candidate)) for name in catalog.names()]
    for path in sorted(HOSTILE.glob("*.py")):
        if path.stem in SLOW_BY_DESIGN:
            continue
        code = path.read_text()
        try:
            check_code(code)
            kind = "runtime rejection"
        except CodeRejected:
            kind = "static rejection"
        items.append((path.stem, kind, answer(Candidate("", path.stem, code))))
    return items


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes over all candidates")
    args = parser.parse_args()
    items = candidates()
    sandbox = Sandbox()
    started = time.perf_counter()
    _, first = screen_text(items[0][2], sandbox=sandbox)
    print(f"cold start (server start + import torch + first verdict): "
          f"{time.perf_counter() - started:.2f} s")
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, kind, text in items:
            started = time.perf_counter()
            _, result = screen_text(text, sandbox=sandbox)
            elapsed = time.perf_counter() - started
            if result.ok != (kind == "passes"):
                print(f"unexpected verdict for {name}: {result.reason}")
            times.setdefault(kind, []).append(elapsed)
    sandbox.close()
    every = [t for values in times.values() for t in values]
    print(f"{len(items)} candidates x {args.rounds} rounds, warm sandbox, text -> verdict:")
    for kind, values in [("all", every), *sorted(times.items())]:
        print(f"  {kind:18} n={len(values):4}  median {1000 * statistics.median(values):7.1f} ms"
              f"  p90 {1000 * percentile(values, 0.9):7.1f} ms  max {1000 * max(values):7.1f} ms")


if __name__ == "__main__":
    main()

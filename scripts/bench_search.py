"""Search strategies on the digits task at one training-step budget: today's loop, multi-fidelity,
and multi-fidelity with islands, each over several seeds, through the real discovery loop.

Run: python scripts/bench_search.py [--seeds 3] [--budget-evals 150] [--out checkpoints/h18-bench]

The proposer is a stand-in, the same in every configuration: it reads the candidates and their
fitness in the context the loop builds (the whole trimmed history, or an island's sampled
parents) and mutates the best of three drawn from it, in a family of classification losses
(temperature, focal exponent, label smoothing, a PolyLoss term). A 135M model on two cores
writes about one proposal per several seconds, too slow for hundreds; what the stand-in keeps
is what the strategies act on: proposals conditioned on the context. Budget: training steps,
burn-in included (a full digits evaluation is 400 steps). Per run it prints candidates
evaluated, fully trained, the best candidate's accuracy and its paired difference to the
cross_entropy baseline on the same validation examples (stats.difference), the same
difference re-measured with three fresh training seeds (less optimistic: the best of many is
chosen on its own noise), wall time and steps.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time
from pathlib import Path

from selfdisco import stats
from selfdisco.config import load_config
from selfdisco.discovery.loop import Discovery
from selfdisco.execution.classification import ClassificationEvaluator
from selfdisco.launch.digits import classification_services
from selfdisco.launch.start import prepare_run_dir
from selfdisco.llm.client import BaseClient
from selfdisco.llm.protocol import Completion
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.control import send
from selfdisco.rundir.events import EventWriter
from selfdisco.seeds import derive
from selfdisco.tasks.digits.task import Evaluations

CONFIGS = {
    "today": {},
    "fidelity": {"fidelity": 0.25, "fidelity_keep": 0.5},
    "fidelity+islands": {"fidelity": 0.25, "fidelity_keep": 0.5, "islands": 4,
                         "migration_interval": 2, "parents": 3},
}
START = {"t": 1.0, "g": 0.0, "e": 0.0, "a": 0.0}  # cross-entropy
LIMITS = {"t": (0.25, 4.0), "g": (0.0, 4.0), "e": (0.0, 0.5), "a": (0.0, 2.0)}
NAME = re.compile(r"t(\d+p\d+)_g(\d+p\d+)_e(\d+p\d+)_a(\d+p\d+)")
FITNESS = re.compile(r"^Fitness: (\d+(?:\.\d+)?)")
FRESH_SEEDS = (101, 102, 103)


def code_of(p: dict) -> tuple[str, str]:
    name = "_".join(f"{k}{p[k]:.2f}".replace(".", "p") for k in "tgea")
    return name, (f"def {name}(logits, targets):\n"
                  f"    logp = F.log_softmax(logits / {p['t']}, dim=1)\n"
                  "    true = logp.gather(1, targets[:, None]).squeeze(1)\n"
                  "    p = true.exp()\n"
                  f"    return -((1 - p) ** {p['g']}) * true - {p['e']} * logp.mean(dim=1)"
                  f" + {p['a']} * (1 - p)\n")


def mutate(parent: dict, rng: random.Random) -> dict:
    child = dict(parent)
    for key in rng.sample("tgea", rng.choice((1, 2))):
        if key == "t":
            child[key] *= math.exp(rng.gauss(0, 0.4))
        else:
            child[key] += rng.gauss(0, {"g": 0.7, "e": 0.08, "a": 0.5}[key])
        low, high = LIMITS[key]
        child[key] = round(min(max(child[key], low), high), 2)
    return child


class MutationProposer(BaseClient):
    """Answers with a mutation of the best of three candidates drawn from its context.

    A family of losses is its start, code_of, mutate, seen (the context's scored members) and
    thought; this one's is the digits family above."""

    model = "mutation"
    start = START
    code_of = staticmethod(code_of)
    mutate = staticmethod(mutate)

    def seen(self, messages: list[dict]) -> list[tuple[float, dict]]:
        seen = []
        for answer, feedback in zip(messages, messages[1:], strict=False):
            if answer["role"] == "assistant" and (match := FITNESS.match(feedback["content"])):
                named = NAME.search(answer["content"])
                if named:
                    values = [float(v.replace("p", ".")) for v in named.groups()]
                    seen.append((float(match.group(1)), dict(zip("tgea", values, strict=True))))
        return seen

    def thought(self, parent: dict) -> str:
        return "a variation"

    def _answer(self, request: dict) -> list[Completion]:
        seen = self.seen(request["messages"])
        rng = random.Random(request["seed"])
        out = []
        for _ in range(request.get("n", 1)):
            drawn = rng.sample(seen, min(3, len(seen)))
            parent = max(drawn, key=lambda s: s[0])[1] if drawn else self.start
            name, code = self.code_of(self.mutate(parent, rng))
            out.append(Completion(text=json.dumps({"thought": self.thought(parent), "name": name,
                                                   "code": code}), finish_reason="stop"))
        return out


def run_one(out: Path, label: str, seed: int, budget: int, evaluator) -> dict:
    config = load_config("cpu", overrides={"seed": seed, "task": {"name": "digits"}, "discovery": {
        "burn_in": ["cross_entropy", "label_smoothing", "focal"], "code_grammar": "free",
        "self_improve": "off", "generations": 100000, "candidates_per_generation": 4,
        **CONFIGS[label]}})
    run_dir = prepare_run_dir(config, out / f"{label}-s{seed}")
    evaluator.steps, evaluator.train_seed = 0, derive(seed, "train")
    spent = [0]

    def stop_at_budget(event: dict) -> None:  # stop before a generation would pass it
        if event["type"] == "generation_finished":
            last, spent[0] = evaluator.steps - spent[0], evaluator.steps
            if evaluator.steps + last > budget:
                send(run_dir, "stop")

    services = classification_services(MutationProposer(), evaluator, "Fitness: accuracy.")
    started = time.perf_counter()
    Discovery(config, run_dir, Archive(run_dir), EventWriter(run_dir, listeners=[stop_at_budget]),
              services).run()
    wall = time.perf_counter() - started
    archive = Archive(run_dir)
    rows = archive.rows()
    archive.close()
    proposals = [r for r in rows if r.kind == "proposal" and r.status != "rejected"]
    reference = next(r for r in rows if r.id == "burn-cross_entropy")
    best = max((r for r in proposals if r.status == "scored"), key=lambda r: r.fitness)
    d = stats.difference(best, reference)
    return {"config": label, "seed": seed, "evaluated": len(proposals),
            "full": sum(r.status == "scored" for r in proposals), "best": best.fitness,
            "best_name": best.name, "diff": d.mean, "diff_se": d.stderr,
            "fresh": fresh_difference(best.code, reference.code), "wall_s": round(wall, 1),
            "steps": evaluator.steps}


def fresh_difference(code: str, reference: str) -> tuple[float, float]:
    """Mean and s.e. of the per-example accuracy difference over FRESH_SEEDS training seeds."""
    diffs = []
    with Evaluations() as evaluations:
        for seed in FRESH_SEEDS:
            a, b = (evaluations.run(c, {}, seed)["fitness"]["metrics"]["per_prompt"]
                    for c in (code, reference))
            diffs += [x - y for x, y in zip(a, b, strict=True)]
    return stats.mean_stderr(diffs)


def summary(results: list[dict]) -> None:
    print("\n| config | seeds | candidates evaluated | fully trained | best accuracy | best - "
          "cross_entropy (same val., paired) | fresh seeds: best - cross_entropy | wall s | "
          "training steps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in CONFIGS:
        rs = [r for r in results if r["config"] == label]
        if not rs:
            continue

        def ms(values, digits=4):
            mean, se = stats.mean_stderr(values)
            return f"{mean:.{digits}f} ± {se or 0.0:.{digits}f}"

        print(f"| {label} | {len(rs)} | {ms([r['evaluated'] for r in rs], 1)} | "
              f"{ms([r['full'] for r in rs], 1)} | {ms([r['best'] for r in rs])} | "
              f"{ms([r['diff'] for r in rs])} | {ms([r['fresh'][0] for r in rs])} | "
              f"{ms([r['wall_s'] for r in rs], 0)} | {ms([r['steps'] for r in rs], 0)} |")
    print("(mean ± s.e. over seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-evals", type=int, default=150,
                        help="the budget in full digits evaluations (400 training steps each)")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=Path("checkpoints/h18-bench"))
    args = parser.parse_args()
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s) {', '.join(sorted(unknown))}; choose from "
                     f"{', '.join(CONFIGS)}")
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"{args.out} is not empty: give another --out")
    evaluator = ClassificationEvaluator({}, train_seed=0)
    results = []
    try:
        for seed in range(args.seeds):
            for label in args.configs.split(","):
                result = run_one(args.out, label, seed, args.budget_evals * 400, evaluator)
                results.append(result)
                print(json.dumps(result), flush=True)
    finally:
        evaluator.close()
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    summary(results)


if __name__ == "__main__":
    main()

"""Search strategies on the sentiment task at one training-step budget: today's loop,
multi-fidelity, and multi-fidelity with islands (bench_search.CONFIGS), each over several seeds,
through the real discovery loop with the real sentiment evaluation.

Run: python scripts/bench_search_sentiment.py [--preset cpu] [--seeds 2] [--budget-steps 64]
     [--out checkpoints/h18-bench-sentiment]

On the cpu preset (two cores) a fully trained candidate takes about 3 minutes, most of it
scoring, and a cheap-stage one about 1.5: the default budget, 64 steps with dpo and hinge as
baselines and the preset's 2 candidates per generation, is one generation per run, about an
hour for 2 seeds (so the islands cannot differ from plain multi-fidelity yet: generation 1's
contexts are the same); 128 steps is 3 generations, about 2 h 15 min.

The proposer is a stand-in, the same in every configuration: it reads the candidates and their
fitness in the context the loop builds (the whole trimmed history, or an island's sampled
parents) and mutates the best of three drawn from it, in a family of preference losses over
x = beta * rho: up to three terms, ws * softplus(-a x), wh * relu(m - c x) and we * exp(-e x).
Every member is a sentence of the primitives code grammar, so each one screens and trains
(losses/grammar.py). One vLLM server serves the whole benchmark: every run attaches to it
(server.url), so no run starts its own. The baselines of a seed are the same in every
configuration, so the later configurations of a seed take them from the burn-in cache; their
training steps count in the budget all the same.

Training steps: each evaluation job's result carries the optimizer steps it completed
(metrics["train"]["steps"], written by the worker; a cheap stage trains its share of them); a
job that ended without a result counts the last step its progress reported; a baseline taken
from the burn-in cache counts the steps of the cached result. A run stops before a generation
would pass the budget: after each generation, when the steps spent plus the most candidate
steps any generation spent so far (the next one's estimate; the baselines' one-off cheap stage
left out) would pass it. Generation 1 always runs.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import CONFIGS, MutationProposer  # noqa: E402 - shared with digits

from selfdisco import stats  # noqa: E402
from selfdisco.config import RunConfig, load_config  # noqa: E402
from selfdisco.errors import UserError  # noqa: E402
from selfdisco.launch.checks import check_run  # noqa: E402
from selfdisco.launch.start import prepare_run_dir  # noqa: E402
from selfdisco.losses.grammar import HEADER  # noqa: E402
from selfdisco.rundir.archive import Archive  # noqa: E402
from selfdisco.rundir.control import send  # noqa: E402
from selfdisco.rundir.events import EventWriter  # noqa: E402

FITNESS = re.compile(r"^Fitness: (-?\d+(?:\.\d+)?)")
LOW, HIGH = 0.1, 4.9  # every number of the primitives grammar
# Term -> its parameters (weight first) and how it is written; a member holds one to three.
TERMS = {
    "s": (("ws", "a"), "{ws} * F.softplus(-{a} * x)"),
    "h": (("wh", "m", "c"), "{wh} * torch.relu({m} - {c} * x)"),
    "e": (("we", "e"), "{we} * torch.exp(-{e} * x)"),
}
NUMBER = r"(\d\.\d)"
TERM_PATTERNS = {key: re.compile(re.escape(form.format(**dict.fromkeys(params, "@")))
                                  .replace("@", NUMBER))
                 for key, (params, form) in TERMS.items()}
START = {"s": {"ws": 1.0, "a": 1.0}}  # dpo: softplus(-x) = -logsigmoid(x)
ADDED = {"s": {"ws": 1.0, "a": 1.0}, "h": {"wh": 0.5, "m": 1.0, "c": 1.0},
         "e": {"we": 0.5, "e": 1.0}}  # a term a mutation adds
BASELINES = "dpo,hinge"


def code_of(member: dict) -> tuple[str, str]:
    """A member ({term: {parameter: value}}) as (name, code) in the primitives grammar."""
    parts, name = [], ["mix"]
    for key, (params, form) in TERMS.items():
        if key in member:
            values = member[key]
            parts.append(form.format(**{p: f"{values[p]:.1f}" for p in params}))
            name.append(key + "".join(f"{round(values[p] * 10):02d}" for p in params))
    return "_".join(name), HEADER + " + ".join(parts) + "\n"


def member_of(code: str) -> dict | None:
    """The member whose code this is; None for code outside the family."""
    if not code.startswith(HEADER):
        return None
    body, member = code[len(HEADER):].strip(), {}
    for key, (params, _) in TERMS.items():
        match = TERM_PATTERNS[key].search(body)
        if match:
            member[key] = {p: float(v) for p, v in zip(params, match.groups(), strict=True)}
            body = body.replace(match.group(0), "", 1)
    return member if member and not body.replace("+", "").strip() else None


def mutate(parent: dict, rng: random.Random) -> dict:
    """One or two changes: a parameter scaled by a log-normal factor, or a term added or
    dropped (one term at least stays)."""
    child = {key: dict(values) for key, values in parent.items()}
    for _ in range(rng.choice((1, 2))):
        if rng.random() < 0.25:
            key = rng.choice(list(TERMS))
            if key not in child:
                child[key] = dict(ADDED[key])
            elif len(child) > 1:
                del child[key]
            continue
        key = rng.choice(list(child))
        param = rng.choice(list(child[key]))
        value = child[key][param] * math.exp(rng.gauss(0, 0.4))
        child[key][param] = round(min(max(value, LOW), HIGH), 1)
    return child


class FamilyProposer(MutationProposer):
    """Answers with a mutation of the best of three family members drawn from its context."""

    model = "family-mutation"
    start = START
    code_of = staticmethod(code_of)
    mutate = staticmethod(mutate)

    def seen(self, messages: list[dict]) -> list[tuple[float, dict]]:
        return seen_members(messages)

    def thought(self, parent: dict) -> str:
        return f"a variation of {code_of(parent)[0]}"


def seen_members(messages: list[dict]) -> list[tuple[float, dict]]:
    """(fitness, member) of each answer in the context followed by its "Fitness: ..." feedback."""
    seen = []
    for answer, feedback in zip(messages, messages[1:], strict=False):
        if answer["role"] != "assistant" or feedback["role"] != "user":
            continue
        match = FITNESS.match(feedback["content"])
        if not match:
            continue
        try:
            member = member_of(json.loads(answer["content"])["code"])
        except (ValueError, KeyError, TypeError):
            continue
        if member:
            seen.append((float(match.group(1)), member))
    return seen


def steps_of(result, fallback: int) -> int:
    """The optimizer steps a job's result says it completed; `fallback` when it says none."""
    steps = ((result.metrics or {}).get("train") or {}).get("steps")
    return int(steps) if isinstance(steps, int | float) else fallback


class StepCount:
    """Training steps spent in one run: all of them, and the proposals' alone."""

    def __init__(self) -> None:
        self.steps = 0
        self.proposal_steps = 0
        self.reused: list[str] = []  # baseline evaluations taken from the burn-in cache

    def add(self, row, steps: int) -> None:
        self.steps += steps
        if row.kind == "proposal":
            self.proposal_steps += steps


class CountingEvaluator:
    """The run's evaluator, counting the steps each job reports."""

    def __init__(self, inner, count: StepCount) -> None:
        self.inner, self.count = inner, count

    def evaluate(self, rows, on_progress, on_done, on_start=None, **options) -> None:
        last_step: dict[str, int] = {}

        def progress(row, report: dict) -> None:
            last_step[row.id] = int(report.get("step") or 0)
            on_progress(row, report)

        def done(row, result) -> None:
            self.count.add(row, steps_of(result, last_step.pop(row.id, 0)))
            on_done(row, result)

        self.inner.evaluate(rows, progress, done, on_start, **options)


class CountingCache:
    """The burn-in cache, counting the steps of each baseline it gives back."""

    def __init__(self, inner, count: StepCount, full_steps: int) -> None:
        self.inner, self.count, self.full_steps = inner, count, full_steps

    def get(self, id: str, code: str | None):
        result = self.inner.get(id, code)
        if result is not None and code is not None:
            self.count.steps += steps_of(result, self.full_steps)
            self.count.reused.append(id)
        return result

    def put(self, id: str, code: str | None, result) -> None:
        self.inner.put(id, code, result)


def run_config(preset: str, seed: int, label: str, *, candidates: int | None,
               burn_in: list[str], server_url: str = "") -> RunConfig:
    """One benchmark run's config: the preset with the configuration's search settings, the
    stand-in proposer's needs (no self-improvement), and the shared server."""
    discovery = {"burn_in": burn_in, "self_improve": "off", "generations": 100000,
                 **CONFIGS[label]}
    if candidates is not None:
        discovery["candidates_per_generation"] = candidates
    overrides = {"seed": seed, "discovery": discovery}
    if server_url:  # the server was checked once, when it started
        overrides["server"] = {"url": server_url, "check_numerics": False}
    return load_config(preset, overrides=overrides)


def start_server(config: RunConfig, out: Path, stack: ExitStack):
    """The one vLLM server of the benchmark, as a run's own managed server would start."""
    from selfdisco.launch.plan import plan_run
    from selfdisco.llm.backend import detect_backend, resolve_dtype
    from selfdisco.llm.models import resolve_model
    from selfdisco.llm.server import VLLMServer

    settings = check_run(config)
    placement = plan_run(config)
    server = VLLMServer(resolve_model(config.models.policy), log_path=out / "server.log",
                        max_model_len=config.server.max_model_len,
                        max_lora_rank=config.server.max_lora_rank,
                        startup_timeout_s=config.server.start_timeout_s,
                        dtype=resolve_dtype(config.server.dtype, detect_backend(), settings.bf16),
                        check_numerics=config.server.check_numerics,
                        **placement.server_options("policy"))
    stack.callback(server.stop)
    server.start()
    return server


def run_one(out: Path, label: str, seed: int, budget: int, args, server_url: str) -> dict:
    """One configuration with one seed until the budget; its figures."""
    from selfdisco.discovery.loop import Discovery
    from selfdisco.launch.start import _live_services
    from selfdisco.tasks import get_task

    config = run_config(args.preset, seed, label, candidates=args.candidates,
                        burn_in=args.burn_in, server_url=server_url)
    run_dir = prepare_run_dir(config, out / f"{label}-s{seed}")
    count = StepCount()
    marks = {"spent": 0, "most": 0, "generations": 0, "search_started": None}

    def stop_at_budget(event: dict) -> None:
        if event["type"] == "generation_started" and marks["search_started"] is None:
            marks["search_started"] = time.perf_counter()
        if event["type"] == "generation_finished":
            last, marks["spent"] = count.proposal_steps - marks["spent"], count.proposal_steps
            marks["most"] = max(marks["most"], last)
            marks["generations"] += 1
            print(f"  {label} seed {seed} generation {event['generation']}: {count.steps} of "
                  f"{budget} steps", file=sys.stderr, flush=True)
            if count.steps + marks["most"] > budget:
                send(run_dir, "stop")

    events = EventWriter(run_dir, listeners=[stop_at_budget])
    task = get_task(config.task.name)
    settings = check_run(config)
    events.emit("run_started", run_id=run_dir.name, task=config.task.name, preset=config.preset,
                proposer=FamilyProposer.model, generations=config.discovery.generations,
                candidates_per_generation=config.discovery.candidates_per_generation, notes=[])
    started = time.perf_counter()
    with ExitStack() as stack:
        archive = Archive(run_dir)
        stack.callback(archive.close)
        services = _live_services(config, run_dir, task, settings, events, stack,
                                  f"Fitness here is the {task.description}; higher is better.")
        services.proposer = FamilyProposer()
        services.evaluator = CountingEvaluator(services.evaluator, count)
        services.burn_in_cache = CountingCache(services.burn_in_cache, count, settings.max_steps)
        setup = time.perf_counter() - started
        Discovery(config, run_dir, archive, events, services).run()
        rows = archive.rows()
    ended = time.perf_counter()
    proposals = [r for r in rows if r.kind == "proposal" and r.status != "rejected"]
    reference = next(r for r in rows if r.id == stats.REFERENCE_ID)
    scored = [r for r in proposals if r.status == "scored"]
    best = max(scored, key=lambda r: r.fitness) if scored else None
    d = stats.difference(best, reference) if best else None
    search_started = marks["search_started"] or ended
    return {"config": label, "seed": seed, "evaluated": len(proposals), "full": len(scored),
            "best": best.fitness if best else None, "best_name": best.name if best else None,
            "reference": reference.fitness,
            "diff": d.mean if d else None, "diff_se": d.stderr if d else None,
            "wall_s": round(ended - started - setup, 1),
            "search_s": round(ended - search_started, 1), "setup_s": round(setup, 1),
            "steps": count.steps, "generations": marks["generations"],
            "burn_in_reused": len(count.reused)}


def summary(results: list[dict], labels: list[str]) -> None:
    """The Markdown table of the runs: mean ± s.e. over seeds per configuration."""
    print("\n| config | seeds | candidates evaluated | fully trained | best fitness | best - dpo "
          "(paired, same prompts) | its s.e. in a run | wall s | search wall s | training "
          "steps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label in labels:
        rs = [r for r in results if r["config"] == label]
        if rs:
            print(f"| {label} | {len(rs)} | {ms(r['evaluated'] for r in rs)} | "
                  f"{ms(r['full'] for r in rs)} | {ms((r['best'] for r in rs), '.4g')} | "
                  f"{ms((r['diff'] for r in rs), '.4g')} | "
                  f"{ms((r['diff_se'] for r in rs), '.2g')} | "
                  f"{ms((r['wall_s'] for r in rs), '.0f')} | "
                  f"{ms((r['search_s'] for r in rs), '.0f')} | "
                  f"{ms((r['steps'] for r in rs), '.0f')} |")
    print("(mean ± s.e. over seeds; a run without a scored proposal counts in no fitness column)")


def ms(values, spec: str = ".1f") -> str:
    """mean ± s.e. of the values that are not None, each in format `spec`; "-" when none is."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, se = stats.mean_stderr(values)
    return f"{mean:{spec}} ± {se or 0.0:{spec}}"


def check_args(parser: argparse.ArgumentParser, args) -> int:
    """Refuse bad input with a clear message (argparse's error); the burn-in's steps."""
    labels = args.configs.split(",")
    unknown = [label for label in labels if label not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    if args.seeds < 1 or (args.candidates is not None and args.candidates < 1):
        parser.error("--seeds and --candidates must be at least 1")
    args.burn_in = [name for name in args.burn_in.split(",") if name]
    if "dpo" not in args.burn_in:
        parser.error("--burn-in must include dpo: every best candidate is compared with it")
    try:
        config = run_config(args.preset, 0, labels[0], candidates=args.candidates,
                            burn_in=args.burn_in)
        settings = check_run(config)
    except UserError as err:
        parser.error(str(err))
    if config.task.name != "sentiment":
        parser.error(f"preset {args.preset} runs the {config.task.name} task; this benchmark "
                     "is for sentiment (presets cpu, smoke)")
    burn_in = len(args.burn_in) * settings.max_steps * config.discovery.replicates
    if args.budget_steps <= burn_in:
        parser.error(f"--budget-steps {args.budget_steps} does not pass the burn-in's {burn_in} "
                     f"training steps ({len(args.burn_in)} baselines x {settings.max_steps} "
                     "steps), which the budget includes: give more")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"{args.out} is not an empty directory: give another --out")
    return burn_in


def main() -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--preset", default="cpu", help="a sentiment preset: cpu or smoke")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget-steps", type=int, default=64,
                        help="training steps per run, burn-in included")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--candidates", type=int, default=None,
                        help="candidates per generation (default: the preset's)")
    parser.add_argument("--burn-in", default=BASELINES,
                        help="baseline losses, comma-separated; dpo is required")
    parser.add_argument("--out", type=Path, default=Path("checkpoints/h18-bench-sentiment"))
    args = parser.parse_args()
    burn_in = check_args(parser, args)
    labels = args.configs.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        with ExitStack() as stack:
            config = run_config(args.preset, 0, labels[0], candidates=args.candidates,
                                burn_in=args.burn_in)
            print(f"starting one vLLM server for {config.models.policy}", file=sys.stderr,
                  flush=True)
            server = start_server(config, args.out, stack)
            for seed in range(args.seeds):
                for label in labels:
                    result = run_one(args.out, label, seed, args.budget_steps, args,
                                     server.base_url)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    finally:
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    reused = sum(r["burn_in_reused"] for r in results)
    print(f"\nburn-in: {burn_in} training steps per run, counted in every run's budget; "
          f"{reused} baseline evaluations of {len(results) * len(args.burn_in)} were reused from "
          "the burn-in cache (same preset, seed and pairs: the same result)")
    summary(results, labels)


if __name__ == "__main__":
    main()

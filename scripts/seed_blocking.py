"""Training seeds as blocks (issue 27): how much of a loss-vs-dpo difference is seed noise?

Trains dpo, dpo at beta / 4, hinge, ipo and the paper's lrml on K shared training seeds, exactly
as a discovery run on the cpu preset trains and scores a candidate (the preset's training
settings and task options, the run's task and training seeds, the confined training path of a
run's worker, the task's default fitness: the reward at the KL budget), seed-major so that
stopping at any time leaves a balanced loss x seed table. Each (loss, seed) result is one JSON
line of results.jsonl under --out (a rerun skips those already there); the adapters and the
points the scoring measured stay beside it. For dpo and lrml, the reward at a few common KL
values (--kl) is read along each policy's own scaling path with the task's KL-budget machinery
(selfdisco/tasks/budget.py: reach_budget and at_budget, as task.score does with kl_budget = that
value, the trained policy's own point measured once and reused), one line per (loss, seed) in
frontier.jsonl. The analysis compares the standard errors before issue 27 (seed-averaged
per-prompt scores plus a pooled seed variance) with the seed-blocked two-way one
(selfdisco.stats.seed_blocked_difference).

Run: python scripts/seed_blocking.py [--seeds K] [--kl 0.75,1.5] [--frontier-seeds N]
     [--stop-after HH:MM] [--analyse-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import time
from pathlib import Path
from statistics import mean, stdev

LOSSES = ("dpo", "dpo_beta4", "hinge", "ipo", "lrml")
FRONTIER_LOSSES = ("dpo", "lrml")
RESULTS = "results.jsonl"
FRONTIER = "frontier.jsonl"
POINTS = "points.json"
KEPT_METRICS = ("reward", "reward_stderr", "kl", "kl_stderr", "mean_tokens", "kl_budget",
                "budget_rule", "budget_points", "fitness_stderr", "sampling_seconds",
                "kl_seconds", "scorer")


def read_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_line(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def deadline(stop_after: str | None) -> dt.datetime | None:
    """The next HH:MM UTC from now (tomorrow's when today's has passed)."""
    if not stop_after:
        return None
    now = dt.datetime.now(dt.UTC)
    hour, minute = (int(x) for x in stop_after.split(":"))
    limit = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return limit if limit > now else limit + dt.timedelta(days=1)


# ---- measuring ------------------------------------------------------------------------------

class Setup:
    """What a cpu-preset discovery run trains and scores with (launch/start.py's template)."""

    def __init__(self, preset: str, out: Path):
        from selfdisco.config import load_config
        from selfdisco.llm.backend import detect_backend, resolve_dtype
        from selfdisco.llm.models import resolve_model
        from selfdisco.rundir.paths import checkpoints_dir
        from selfdisco.seeds import derive
        from selfdisco.tasks import get_task, run_train_settings

        self.config = load_config(preset)
        self.task = get_task(self.config.task.name)
        self.settings = run_train_settings(self.config)
        self.model_path = resolve_model(self.config.models.policy)
        self.dtype = resolve_dtype(self.config.server.dtype, detect_backend(),
                                   self.settings.bf16)
        self.cache_dir = checkpoints_dir() / "cache"
        self.task_seed = derive(self.config.seed, "task")
        self.train_seed = derive(self.config.seed, "train")
        self.out = out

    def train_seed_of(self, k: int) -> int:
        from selfdisco.seeds import replicate_seed

        return replicate_seed(self.train_seed, k)

    def recipe(self, loss: str):
        """(catalog entry name, training settings) of one of LOSSES."""
        if loss == "dpo_beta4":
            return "dpo", self.settings.with_overrides(beta=self.settings.beta / 4)
        return loss, self.settings

    def context(self, client, **options):
        from selfdisco.tasks import TaskContext

        return TaskContext(client=client, model_path=self.model_path, cache_dir=self.cache_dir,
                           seed=self.task_seed, preset=self.config.preset,
                           options={**self.config.task.options, **options}, dtype=self.dtype)

    def server(self):
        from selfdisco.launch.plan import plan_run
        from selfdisco.llm.server import VLLMServer

        server = self.config.server
        return VLLMServer(self.model_path, log_path=self.out / "server.log",
                          max_model_len=server.max_model_len,
                          max_lora_rank=server.max_lora_rank,
                          startup_timeout_s=server.start_timeout_s, dtype=self.dtype,
                          check_numerics=server.check_numerics,
                          **plan_run(self.config).server_options("policy"))


class RecordedMeasures:
    """The points task.score measures (the trained policy, then each shrunk scale), kept so that
    the frontier reuses them; the task's own method runs unchanged."""

    def __init__(self, task):
        self.points: list = []
        self._measure = task.measure
        task.measure = self

    def __call__(self, ctx, settings, prompts, adapter_path, metrics):
        point = self._measure(ctx, settings, prompts, adapter_path, metrics)
        scale_file = Path(str(adapter_path)) / "scale.json" if adapter_path else None
        scale = (json.loads(scale_file.read_text())["scale"]
                 if scale_file and scale_file.exists() else 1.0)
        self.points.append(dataclasses.replace(point, scale=scale))
        return point


def save_points(path: Path, points: list) -> None:
    path.write_text(json.dumps([dataclasses.asdict(p) for p in points]))


def load_points(path: Path) -> list:
    from selfdisco.tasks.budget import Point

    return [Point(**p) for p in json.loads(path.read_text())]


def train_and_score(setup: Setup, ctx, pairs, recorder: RecordedMeasures, loss: str,
                    k: int) -> dict:
    from selfdisco.losses import catalog
    from selfdisco.losses.candidate import Candidate
    from selfdisco.train.adapter import train_adapter

    entry, settings = setup.recipe(loss)
    candidate = catalog.get(entry).candidate
    candidate = Candidate(thought="", name=candidate.name, code=candidate.code)
    out_dir = setup.out / loss / f"s{k}"
    seed = setup.train_seed_of(k)
    started = time.perf_counter()
    trained = train_adapter(model_path=setup.model_path, data=pairs, settings=settings,
                            out_dir=out_dir, candidate=candidate,
                            ref_cache_dir=setup.cache_dir / "refcache", seed=seed)
    train_seconds = time.perf_counter() - started
    record = {"loss": loss, "seed": k, "train_seed": seed, "beta": settings.beta,
              "train_status": trained.status, "train_seconds": round(train_seconds, 1),
              "confined": (trained.metrics or {}).get("confined"),
              "reward_accuracy": (trained.metrics or {}).get("rewards/accuracies")}
    if not trained.ok:
        return {**record, "fitness": None, "error": trained.error}
    recorder.points.clear()
    started = time.perf_counter()
    fitness = setup.task.score(ctx, adapter_path=str(trained.adapter_path))
    record["score_seconds"] = round(time.perf_counter() - started, 1)
    save_points(out_dir / POINTS, recorder.points)
    metrics = fitness.metrics
    return {**record, "fitness": fitness.value if fitness.ok else None, "stderr": fitness.stderr,
            "n": fitness.n, "per_prompt": metrics.get("per_prompt"),
            "adapter": str(trained.adapter_path),
            **{key: metrics[key] for key in KEPT_METRICS if key in metrics}}


def frontier(setup: Setup, ctx, loss: str, k: int, kls: list[float]) -> dict:
    """The reward at each KL in `kls` on this policy's scaling path: per KL, the task's
    reach_budget from the trained point and at_budget, a scale measured once is reused."""
    from selfdisco import stats
    from selfdisco.tasks.budget import at_budget, reach_budget, scaled_adapter

    task = setup.task
    settings = task.settings(ctx)
    prompts = task.openings(settings).held_out[:settings.eval_prompts]
    out_dir = setup.out / loss / f"s{k}"
    adapter = out_dir / "adapter"
    known = {round(p.scale, 4): p for p in load_points(out_dir / POINTS)}
    measured = 0
    started = time.perf_counter()

    def shrunk(scale: float):
        nonlocal measured
        if round(scale, 4) not in known:
            scaled = scaled_adapter(adapter, scale, out_dir / "scaled" / f"x{scale:.4f}")
            point = task.measure(ctx, settings, prompts, str(scaled), {})
            known[round(scale, 4)] = dataclasses.replace(point, scale=scale)
            measured += 1
        return known[round(scale, 4)]

    full = known[1.0]
    at = {}
    for kl in sorted(kls, reverse=True):
        points = reach_budget(full, kl, shrunk)
        values, how = at_budget(points, kl)
        value, stderr = stats.mean_stderr(values) if values else (math.nan, None)
        at[f"{kl:g}"] = {"reward": value, "stderr": stderr, "rule": how["rule"],
                         "per_prompt": [round(v, 6) for v in values]}
    save_points(out_dir / POINTS, sorted(known.values(), key=lambda p: -p.scale))
    return {"loss": loss, "seed": k, "kl": full.kl, "reward": full.reward, "at": at,
            "measures": measured, "seconds": round(time.perf_counter() - started, 1)}


def measure_all(args, setup: Setup) -> None:
    results_path, frontier_path = setup.out / RESULTS, setup.out / FRONTIER
    done = {(r["loss"], r["seed"]) for r in read_lines(results_path)
            if r.get("fitness") is not None}  # a failed one is tried again
    framed = {(r["loss"], r["seed"]) for r in read_lines(frontier_path)}
    kls = [float(x) for x in args.kl.split(",")] if args.kl else []
    frontier_seeds = args.seeds if args.frontier_seeds is None else args.frontier_seeds
    stop = deadline(args.stop_after)
    print(f"no new seed round after {stop:%Y-%m-%d %H:%M} UTC" if stop else "no deadline")
    started = time.perf_counter()
    with setup.server() as server:
        print(f"server up in {time.perf_counter() - started:.0f} s", flush=True)
        ctx = setup.context(server.client())
        recorder = RecordedMeasures(setup.task)
        pairs = setup.task.preference_data(ctx)
        print(f"{len(pairs)} preference pairs", flush=True)
        for k in range(args.seeds):
            todo = [loss for loss in LOSSES if (loss, k) not in done]
            todo_frontier = [loss for loss in FRONTIER_LOSSES
                             if kls and k < frontier_seeds and (loss, k) not in framed]
            if not todo and not todo_frontier:
                continue
            if stop and dt.datetime.now(dt.UTC) >= stop:
                print(f"past {args.stop_after} UTC: no new seed round (seed {k})", flush=True)
                return
            for loss in todo:
                record = train_and_score(setup, ctx, pairs, recorder, loss, k)
                append_line(results_path, record)
                print(f"seed {k} {loss:9s} fitness {record['fitness']} ± "
                      f"{record.get('stderr')} KL {record.get('kl')} train "
                      f"{record['train_seconds']} s score {record.get('score_seconds')} s "
                      f"[{dt.datetime.now(dt.UTC):%H:%M:%S}]", flush=True)
            for loss in todo_frontier:
                record = frontier(setup, ctx, loss, k, kls)
                append_line(frontier_path, record)
                print(f"seed {k} {loss:9s} frontier "
                      + ", ".join(f"KL {kl}: {v['reward']:.4f}" for kl, v in record["at"].items())
                      + f" ({record['measures']} measures, {record['seconds']} s) "
                      f"[{dt.datetime.now(dt.UTC):%H:%M:%S}]", flush=True)


# ---- analysis -------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def se_of(values: list[float]) -> float | None:
    return stdev(values) / math.sqrt(len(values)) if len(values) >= 2 else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def old_difference(a: dict[int, dict], b: dict[int, dict], s_seed: float | None):
    """The analysis before issue 27: per-prompt paired differences of the seed-averaged
    per-prompt scores, with the pooled seed variance added per side (s_seed / K)."""
    mean_a = [mean(col) for col in zip(*(r["per_prompt"] for r in a.values()), strict=True)]
    mean_b = [mean(col) for col in zip(*(r["per_prompt"] for r in b.values()), strict=True)]
    diffs = [x - y for x, y in zip(mean_a, mean_b, strict=True)]
    variance = stdev(diffs) ** 2 / len(diffs) + (s_seed or 0.0) * (1 / len(a) + 1 / len(b))
    return mean(diffs), math.sqrt(variance)


def analyse(out: Path) -> None:
    from selfdisco import stats

    by_loss: dict[str, dict[int, dict]] = {loss: {} for loss in LOSSES}
    failed = {}
    for r in read_lines(out / RESULTS):
        if r.get("fitness") is not None and r.get("per_prompt"):
            by_loss.setdefault(r["loss"], {})[r["seed"]] = r
        else:
            failed[r["loss"], r["seed"]] = r
    for (loss, k), r in failed.items():
        if k not in by_loss.get(loss, {}):
            print(f"left out: {loss} seed {k} ({r.get('train_status')}, "
                  f"{r.get('error') or r.get('budget_rule')})")
    losses = [loss for loss in by_loss if by_loss[loss]]
    if "dpo" not in losses:
        print("no dpo results yet")
        return
    print(f"\n### 1. Fitness per loss (reward at the KL budget; {out / RESULTS})\n")
    rows = []
    for loss in losses:
        runs = by_loss[loss]
        fits = [runs[k]["fitness"] for k in sorted(runs)]
        rows.append([loss, f"{fmt(mean(fits))} ± {fmt(se_of(fits))}", str(len(fits)),
                     ", ".join(fmt(f) for f in fits), fmt(mean(runs[k]["kl"] for k in runs), 2),
                     fmt(mean(runs[k]["reward"] for k in runs)),
                     fmt(mean(runs[k]["stderr"] for k in runs))])
    print(table(["loss", "mean fitness ± se (sd/√K)", "K", "per-seed fitness (seed 0, 1, …)",
                 "mean KL (nats)", "mean reward (own KL)", "mean sampling se"], rows))

    s_seed = stats.pooled_seed_variance([(r["fitness"], r["stderr"]) for r in runs.values()]
                                        for runs in by_loss.values() if runs)
    print(f"\n### 2. Each loss minus dpo (paired by seed and prompt)\n\npooled between-seed "
          f"variance s_seed = {fmt(s_seed, 6)} (analysis before issue 27)\n")
    rows = []
    for loss in losses:
        if loss == "dpo":
            continue
        seeds = sorted(set(by_loss[loss]) & set(by_loss["dpo"]))
        a = {k: by_loss[loss][k] for k in seeds}
        b = {k: by_loss["dpo"][k] for k in seeds}
        old_mean, old_se = old_difference(a, b, s_seed)
        new = stats.seed_blocked_difference([a[k]["per_prompt"] for k in seeds],
                                            [b[k]["per_prompt"] for k in seeds])
        per_seed = [a[k]["fitness"] - b[k]["fitness"] for k in seeds]
        seed_se = se_of(per_seed)
        interval = new.interval()
        parts = ", ".join(f"{name} {fmt(share, 6)}" for name, share in new.components.items())
        rows.append([loss, str(len(seeds)), fmt(old_mean, sign=True), fmt(old_se),
                     fmt(ratio(old_mean, old_se), 2, True), fmt(new.mean, sign=True),
                     fmt(new.stderr), fmt(ratio(new.mean, new.stderr), 2, True),
                     fmt(new.df, 1), f"[{fmt(interval[0], sign=True)}, "
                     f"{fmt(interval[1], sign=True)}]" if interval else "-", parts,
                     fmt(seed_se), fmt(ratio(mean(per_seed), seed_se), 2, True)])
    print(table(["loss", "K", "old: diff", "old: se", "old: z", "new: diff", "new: se",
                 "new: z", "new: df", "new: 95% interval", "new: components (se²)",
                 "per-seed diffs: se", "per-seed: z"], rows))

    print("\n### 3. Per-seed fitness correlation with dpo, and the pooled interaction\n")
    rows = []
    for loss in losses:
        if loss == "dpo":
            continue
        seeds = sorted(set(by_loss[loss]) & set(by_loss["dpo"]))
        r = stats.correlation([by_loss[loss][k]["fitness"] for k in seeds],
                              [by_loss["dpo"][k]["fitness"] for k in seeds])
        rows.append([loss, str(len(seeds)), fmt(r, 3, True)])
    print(table(["loss", "K", "Pearson r with dpo"], rows))
    interaction = stats.pooled_interaction(
        {loss: {k: r["fitness"] for k, r in by_loss[loss].items()} for loss in losses})
    if interaction:
        print(f"\npooled_interaction over {len(losses)} losses: variance of one seed's "
              f"difference {interaction.variance:.6f} (sd {math.sqrt(interaction.variance):.4f})"
              f", df {interaction.df}")
    else:
        print("\npooled_interaction: none (no two losses share two seeds)")
    analyse_frontier(out)
    print("\n### Wall times per (loss, seed): training s / scoring s\n")
    seeds = sorted({k for runs in by_loss.values() for k in runs})
    print(table(["loss", *(f"seed {k}" for k in seeds)],
                [[loss, *(f"{by_loss[loss][k]['train_seconds']:.0f} / "
                          f"{by_loss[loss][k]['score_seconds']:.0f}" if k in by_loss[loss]
                          else "-" for k in seeds)] for loss in losses]))


def analyse_frontier(out: Path) -> None:
    from selfdisco import stats

    by_loss: dict[str, dict[int, dict]] = {}
    for r in read_lines(out / FRONTIER):
        by_loss.setdefault(r["loss"], {})[r["seed"]] = r
    if not all(by_loss.get(loss) for loss in FRONTIER_LOSSES):
        print("\n### 4. Frontier: no dpo and lrml frontier results yet")
        return
    dpo, lrml = by_loss["dpo"], by_loss["lrml"]
    seeds = sorted(set(dpo) & set(lrml))
    print(f"\n### 4. Frontier: reward at common KL values, lrml vs dpo paired by seed "
          f"(seeds {', '.join(map(str, seeds))}; {out / FRONTIER})\n")
    rows = []
    for kl in dpo[seeds[0]]["at"]:
        d = [dpo[k]["at"][kl]["reward"] for k in seeds]
        lr = [lrml[k]["at"][kl]["reward"] for k in seeds]
        diffs = [x - y for x, y in zip(lr, d, strict=True)]
        blocked = stats.seed_blocked_difference([lrml[k]["at"][kl]["per_prompt"] for k in seeds],
                                                [dpo[k]["at"][kl]["per_prompt"] for k in seeds])
        under = sum(r["kl"] <= float(kl) for r in (*[dpo[k] for k in seeds],
                                                   *[lrml[k] for k in seeds]))
        rows.append([kl, f"{fmt(mean(d))} ± {fmt(se_of(d))}", f"{fmt(mean(lr))} ± {fmt(se_of(lr))}",
                     f"{fmt(mean(diffs), sign=True)} ± {fmt(se_of(diffs))}",
                     fmt(ratio(mean(diffs), se_of(diffs)), 2, True),
                     f"{fmt(blocked.mean, sign=True)} ± {fmt(blocked.stderr)}", str(len(seeds)),
                     str(under)])
    print(table(["KL (nats)", "dpo reward ± se", "lrml reward ± se",
                 "lrml - dpo (per-seed) ± se", "z", "seed-blocked diff ± se", "K",
                 "policies under this KL (read at own KL)"], rows))
    rows = [[loss, str(k), fmt(r["kl"], 2), fmt(r["reward"]),
             *(fmt(r["at"][kl]["reward"]) for kl in r["at"]), str(r["measures"]),
             str(r["seconds"])]
            for loss in FRONTIER_LOSSES for k, r in sorted(by_loss[loss].items())]
    kls = list(dpo[seeds[0]]["at"])
    print()
    print(table(["loss", "seed", "own KL", "own reward", *(f"reward at KL {kl}" for kl in kls),
                 "extra measures", "seconds"], rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="training seeds K (default 4)")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--out", default="checkpoints/checks/seed-blocking")
    # On the cpu preset lrml stays near 1.6 nats (dpo drifts to about 11): read both below it.
    parser.add_argument("--kl", default="0.75,1.5",
                        help="comma-separated KL values of the frontier ('' for none)")
    parser.add_argument("--frontier-seeds", type=int, default=None,
                        help="read the frontier on the first N seeds only (default: all)")
    parser.add_argument("--stop-after", default=None,
                        help="HH:MM UTC: start no new seed round after it")
    parser.add_argument("--analyse-only", action="store_true",
                        help="print the analysis of what --out holds, measure nothing")
    args = parser.parse_args()

    import selfdisco

    print(f"selfdisco from {selfdisco.__file__}")
    out = Path(args.out).resolve()  # the confined training child runs elsewhere
    if not args.analyse_only:
        setup = Setup(args.preset, out)
        print(f"model {setup.model_path}, dtype {setup.dtype}, task seed {setup.task_seed}, "
              f"train seeds {[setup.train_seed_of(k) for k in range(args.seeds)]}\ntraining "
              f"settings {setup.settings.to_dict()}\ntask options {setup.config.task.options}",
              flush=True)
        measure_all(args, setup)
    analyse(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

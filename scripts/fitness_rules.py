"""Which budget fitness measures loss quality, not drift: rules side by side on shared seeds.

Trains dpo, dpo at beta / 4, hinge and ipo on K shared training seeds exactly as a cpu-preset
run does (scripts/seed_blocking.py's Setup and training), then measures each policy along its
scaling path as the task's budget rule does (selfdisco/tasks/budget.py: reach_budget with
growth, at the run's budget of 6 nats) and at the points a low budget (2 nats) needs. Every
measured point keeps both KL estimates of every sample (the exact
per-token one and the sampled log-ratio), so the rules are computed from the same samples:

- v1: the rule before (a policy under the budget read at its own KL, over it read between the
  nearest measured points; KL by the sampled log-ratio of one sample per prompt, 32 of 64);
- budget: today's rule (budget.py: grown or shrunk to the budget, exact KL from all samples,
  the KL noise in each prompt's value);
- low: the same at a budget of 2 nats, under most policies' reach;
- range: the mean of the readings at 2, 4 and 6 nats (4 read between the nearest measured
  points on either side).

For each rule: the fitness per loss (mean over seeds and its seed-blocked standard error), each
loss's paired difference to dpo (selfdisco.stats.seed_blocked_difference), the correlation of
fitness with the trained policy's KL over all policies and within losses (seed to seed), and the
KL estimators' standard errors on the same samples. One JSON line per (loss, seed) in
results.jsonl under --out (a rerun skips those there), seed-major.

Run: python scripts/fitness_rules.py [--seeds K] [--stop-after HH:MM] [--analyse-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import sys
import time
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_blocking import Setup, append_line, deadline, read_lines  # noqa: E402

LOSSES = ("dpo", "dpo_beta4", "hinge", "ipo")
RESULTS = "results.jsonl"
BUDGET = 6.0
LOW = 2.0
RANGE = (2.0, 4.0, 6.0)
OLD_KL_SAMPLES = 32


class Recorder:
    """Keeps every KL estimate the task's measure computes (both estimators, per sample)."""

    def __init__(self):
        import selfdisco.tasks.sentiment as sentiment

        self.last: list[dict] = []
        self._inner = sentiment.sequence_kls
        sentiment.sequence_kls = self

    def __call__(self, model_path, adapter_path, samples, **options):
        estimates = self._inner(model_path, adapter_path, samples, **options)
        self.last = [{"prompt": s.prompt_index, "exact": e.exact, "sampled": e.sampled}
                     for s, e in zip(samples, estimates, strict=True)]
        return estimates


def train(setup: Setup, pairs, loss: str, k: int):
    from selfdisco.losses import catalog
    from selfdisco.losses.candidate import Candidate
    from selfdisco.train.adapter import train_adapter

    entry, settings = setup.recipe(loss)
    candidate = catalog.get(entry).candidate
    out_dir = setup.out / loss / f"s{k}"
    started = time.perf_counter()
    trained = train_adapter(model_path=setup.model_path, data=pairs, settings=settings,
                            out_dir=out_dir,
                            candidate=Candidate(thought="", name=candidate.name,
                                                code=candidate.code),
                            ref_cache_dir=setup.cache_dir / "refcache",
                            seed=setup.train_seed_of(k))
    return trained, round(time.perf_counter() - started, 1)


def measure_policy(setup: Setup, ctx, recorder: Recorder, adapter: Path, out_dir: Path) -> dict:
    """The trained policy and the scales the budget rules need, each point with its rewards
    and both KL estimates per sample."""
    from selfdisco.tasks.budget import Point, reach_budget, scaled_adapter

    task = setup.task
    settings = task.settings(ctx)
    prompts, _ = task.scored_prompts(settings)
    known: dict[float, Point] = {}
    records: dict[float, dict] = {}

    def measure(scale: float) -> Point:
        key = round(scale, 4)
        if key not in known:
            path = (None if scale == 0 else
                    str(adapter) if scale == 1 else
                    str(scaled_adapter(adapter, scale, out_dir / "scaled" / f"x{key:.4f}")))
            recorder.last = []
            started = time.perf_counter()
            point = task.measure(ctx, settings, prompts, path, {})
            known[key] = dataclasses.replace(point, scale=scale)
            records[key] = {"scale": scale, "rewards": point.rewards, "kls": recorder.last,
                            "seconds": round(time.perf_counter() - started, 1)}
        return known[key]

    full = measure(1.0)
    reach_budget(full, BUDGET, measure)  # today's rule, as a run measures it
    reach_budget(full, LOW, measure)
    return {"points": sorted(records.values(), key=lambda r: r["scale"])}


def measure_all(args, setup: Setup) -> None:
    results = setup.out / RESULTS
    done = {(r["loss"], r["seed"]) for r in read_lines(results) if r.get("points")}
    stop = deadline(args.stop_after)
    started = time.perf_counter()
    with setup.server() as server:
        print(f"server up in {time.perf_counter() - started:.0f} s", flush=True)
        ctx = setup.context(server.client(), kl_samples=0, fitness_version=2)
        recorder = Recorder()
        pairs = setup.task.preference_data(ctx)
        print(f"{len(pairs)} preference pairs", flush=True)
        for k in range(args.seeds):
            for loss in LOSSES:
                if (loss, k) in done:
                    continue
                if stop and dt.datetime.now(dt.UTC) >= stop:
                    print(f"past {args.stop_after} UTC: stopping", flush=True)
                    return
                trained, seconds = train(setup, pairs, loss, k)
                record = {"loss": loss, "seed": k, "train_seconds": seconds,
                          "train_status": trained.status}
                if trained.ok:
                    out_dir = setup.out / loss / f"s{k}"
                    t0 = time.perf_counter()
                    record.update(measure_policy(setup, ctx, recorder,
                                                 Path(trained.adapter_path), out_dir))
                    record["measure_seconds"] = round(time.perf_counter() - t0, 1)
                append_line(results, record)
                rules = fitness_rules(record) if trained.ok else {}
                print(f"seed {k} {loss:9s} KL {rules.get('kl', math.nan):.2f} "
                      + " ".join(f"{name} {v['value']:.4f}" for name, v in rules.items()
                                 if isinstance(v, dict))
                      + f" train {seconds} s measure {record.get('measure_seconds')} s "
                      f"({len(record.get('points', []))} points) "
                      f"[{dt.datetime.now(dt.UTC):%H:%M:%S}]", flush=True)


# ---- the rules ------------------------------------------------------------------------------

def points_of(record: dict, estimator: str, subset: int = 0) -> list:
    """Budget points (the trained one first) with one estimator's KL per prompt; subset: the
    first `subset` samples in kl_subset's order (one per prompt first), 0: all."""
    from types import SimpleNamespace

    from selfdisco.tasks.budget import Point
    from selfdisco.tasks.sentiment import kl_subset

    points = []
    for p in record["points"]:
        rewards = p["rewards"]
        kls: list[list[float]] = [[] for _ in rewards]
        if p["scale"] == 0:
            kls = [[0.0] for _ in rewards]
        else:
            samples = [SimpleNamespace(prompt_index=e["prompt"], kl=e[estimator])
                       for e in p["kls"]]
            for sample in kl_subset(samples, subset):
                kls[sample.prompt_index].append(sample.kl)
        points.append(Point(scale=p["scale"], rewards=rewards, kls=kls))
    full = next(p for p in points if p.scale == 1.0)
    return [full] + [p for p in points if p is not full]


def fitness_rules(record: dict) -> dict:
    """Each rule's per prompt values and mean for one policy, and the trained policy's KL."""
    from selfdisco.tasks.budget import at_budget

    exact = points_of(record, "exact")
    old = points_of(record, "sampled", OLD_KL_SAMPLES)
    found = {"kl": exact[0].kl}
    rules = {"v1": at_budget(old, BUDGET, grow=False)[0],
             "budget": at_budget(exact, BUDGET)[0],
             "low": at_budget(exact, LOW)[0]}
    readings = [at_budget(exact, b)[0] for b in RANGE]
    rules["range"] = [mean(v) for v in zip(*readings, strict=True)]
    for name, values in rules.items():
        found[name] = {"value": mean(values), "per_prompt": values}
    return found


def pearson(xs: list[float], ys: list[float]) -> float:
    mx, my = mean(xs), mean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else math.nan


def centred(table: dict, rule: str, groups: list[list]) -> tuple[list[float], list[float]]:
    """The policies' KL and fitness under `rule`, each group's mean taken out (groups: lists of
    (loss, seed) keys of `table`)."""
    kls, fits = [], []
    for keys in groups:
        kl = [table[key]["kl"] for key in keys]
        f = [table[key][rule]["value"] for key in keys]
        kls += [x - mean(kl) for x in kl]
        fits += [x - mean(f) for x in f]
    return kls, fits


def correlation(xs: list[float], ys: list[float], groups: int) -> tuple[float, float, int]:
    """Pearson's r of values centred within `groups` groups, its two-sided p and its df."""
    from scipy import stats as sps

    r = pearson(xs, ys)
    dof = len(xs) - groups - 1
    p = (2 * sps.t.sf(abs(r) * math.sqrt(dof / (1 - r ** 2)), dof)
         if dof > 0 and abs(r) < 1 else math.nan)
    return r, p, dof


def analyse(out: Path) -> None:
    from selfdisco import stats

    records = [r for r in read_lines(out / RESULTS) if r.get("points")]
    seeds = sorted({r["seed"] for r in records})
    complete = [k for k in seeds if all(any(r["loss"] == loss and r["seed"] == k
                                            for r in records) for loss in LOSSES)]
    table = {(r["loss"], r["seed"]): fitness_rules(r) for r in records if r["seed"] in complete}
    print(f"{len(complete)} complete seeds ({complete}); losses {', '.join(LOSSES)}; "
          f"budget {BUDGET:g} nats, low {LOW:g}, range {RANGE}")
    print("\ntrained policies' KL (exact, all samples) by seed:")
    for loss in LOSSES:
        print(f"  {loss:9s} " + " ".join(f"{table[(loss, k)]['kl']:6.2f}" for k in complete))
    for rule in ("v1", "budget", "low", "range"):
        print(f"\nrule {rule}:")
        for loss in LOSSES:
            grid = [table[(loss, k)][rule]["per_prompt"] for k in complete]
            values = [table[(loss, k)][rule]["value"] for k in complete]
            row_mean = mean(values)
            own = [(v, stats.mean_stderr(g)[1]) for v, g in zip(values, grid, strict=True)]
            stderr = stats.replicate_stderr(own, None, grid)
            line = f"  {loss:9s} {row_mean:.4f} ± {stderr:.4f}" if stderr else \
                f"  {loss:9s} {row_mean:.4f}"
            if loss != "dpo":
                base = [table[("dpo", k)][rule]["per_prompt"] for k in complete]
                d = stats.seed_blocked_difference(grid, base)
                line += (f"   vs dpo {d.mean:+.4f} ± {d.stderr:.4f} (z {d.mean / d.stderr:+.2f}, "
                         f"df {d.df:.1f})" if d.stderr else f"   vs dpo {d.mean:+.4f}")
            print(line)
        fits = [table[key][rule]["value"] for key in table]
        kls = [table[key]["kl"] for key in table]
        r_all = pearson(kls, fits)
        within_k, within_f = centred(table, rule, [[(loss, k) for k in complete]
                                                   for loss in LOSSES])
        r_within, p_within, dof = correlation(within_k, within_f, len(LOSSES))
        by_seed_k, by_seed_f = centred(table, rule, [[(loss, k) for loss in LOSSES]
                                                     for k in complete])
        r_seed, p_seed, dof_seed = correlation(by_seed_k, by_seed_f, len(complete))
        slope = (sum(a * b for a, b in zip(by_seed_k, by_seed_f, strict=True))
                 / sum(a * a for a in by_seed_k))
        print(f"  r(fitness, KL): all {len(fits)} policies {r_all:+.2f}; across losses within "
              f"a seed (what ranks losses; {dof_seed} df) {r_seed:+.2f}, p {p_seed:.3f}, "
              f"{slope:+.4f} per nat; within losses, seed to seed ({dof} df) {r_within:+.2f}, "
              f"p {p_within:.3f}")
    print("\nKL estimators on the same samples (trained policies; mean s.e. of the mean KL):")
    ses = {"sampled, 32 of 64": [], "sampled, all": [], "exact, all": []}
    for r in records:
        full = next(p for p in r["points"] if p["scale"] == 1.0)
        for name, estimator, subset in (("sampled, 32 of 64", "sampled", OLD_KL_SAMPLES),
                                        ("sampled, all", "sampled", 0),
                                        ("exact, all", "exact", 0)):
            point = points_of({"points": [full]}, estimator, subset)[0]
            values = [k for ks in point.kls for k in ks]
            ses[name].append((stats.mean_stderr(values)[1], point.kl))
    for name, pairs in ses.items():
        print(f"  {name:18s} s.e. {mean(s for s, _ in pairs):.3f} (range "
              f"{min(s for s, _ in pairs):.3f}-{max(s for s, _ in pairs):.3f}), mean KL "
              f"{mean(k for _, k in pairs):.2f}, {len(pairs)} policies")
    ratios = [a[0] / b[0] for a, b in zip(ses["sampled, 32 of 64"], ses["exact, all"],
                                          strict=True) if b[0]]
    same = [a[0] / b[0] for a, b in zip(ses["sampled, all"], ses["exact, all"], strict=True)
            if b[0]]
    print(f"  s.e. ratio sampled (32) / exact (all): median {sorted(ratios)[len(ratios) // 2]:.2f}"
          f"; sampled (all) / exact (all): median {sorted(same)[len(same) // 2]:.2f}")
    seconds = [r["measure_seconds"] for r in records if r.get("measure_seconds")]
    points = [len(r["points"]) for r in records]
    training = mean(r["train_seconds"] for r in records)
    print(f"\ncost: {mean(points):.1f} points measured per policy (all rules), "
          f"{mean(seconds):.0f} s per policy; training {training:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="default: checkpoints/checks/fitness-rules")
    parser.add_argument("--stop-after", default=None, help="HH:MM UTC: no new policy after it")
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    from selfdisco.rundir.paths import checkpoints_dir

    out = args.out or checkpoints_dir() / "checks" / "fitness-rules"
    out.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        measure_all(args, Setup("cpu", out))
    analyse(out)


if __name__ == "__main__":
    main()

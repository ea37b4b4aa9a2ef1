"""Does the sentiment fitness tell a good loss from a bad one? Prints a table and timings.

Make preference pairs from the reference policy, train LoRA adapters with dpo, with the opposite
loss (dpo applied to -rho, which prefers the rejected continuation) and with a weakly
regularised control (dpo at a quarter of the recipe's beta, which drifts further), and score the
base model and the three adapters on the same held-out openings with the same sampling seeds,
under the task's fitness (by default the reward at a fixed KL budget: a policy past the budget
is shrunk back to it, see selfdisco/tasks/budget.py). Differences are paired over
prompts (selfdisco.stats.difference); each adapter is trained once, so they hold sampling
noise only. The check passes when dpo beats the opposite loss and the untrained base by at
least 3 standard errors each, and the control does not outrank dpo unless it is better on both
reward and KL or ahead by more than the tie rule's 2 standard errors.

Run: python scripts/check_sentiment_separation.py [--preset cpu] [--set KEY=VALUE ...]
(--set overrides training settings, e.g. --set max_steps=64 --set learning_rate=5e-4;
--option overrides task options, e.g. --option kl_budget=4 or --option kl_budget=0
--option kl_weight=0.02).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

OPPOSITE_DPO = '''
def opposite_dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                 reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(-beta * rho)
'''


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, _, raw = item.partition("=")
        overrides[key] = json.loads(raw) if raw[:1] in "[{" else _number(raw)
    return overrides


def _number(raw: str):
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def row(name: str, fitness, code: str | None) -> SimpleNamespace:
    """A fitness in the shape selfdisco.stats reads (fitness, stderr, code, metrics)."""
    return SimpleNamespace(id=name, fitness=fitness.value, stderr=fitness.stderr, code=code,
                           metrics=fitness.metrics)


def z_score(difference) -> float:
    return difference.mean / difference.stderr if difference.stderr else math.nan


def print_table(rows: dict[str, SimpleNamespace], reference: SimpleNamespace) -> None:
    from selfdisco.stats import difference

    print(f"\n{'policy':14s} {'fitness':>17s} {'reward':>17s} {'KL (nats)':>15s} "
          f"{'- dpo (paired)':>18s} {'z':>6s}")
    for name, r in rows.items():
        m = r.metrics
        d = difference(r, reference) if r is not reference else None
        versus = f"{d.mean:+.4f} ± {d.stderr:.4f}" if d else "-"
        z = f"{z_score(d):+.1f}" if d else "-"
        print(f"{name:14s} {r.fitness:8.4f} ± {r.stderr:6.4f} {m['reward']:8.4f} ± "
              f"{m['reward_stderr']:6.4f} {m['kl']:7.3f} ± {m['kl_stderr']:5.3f} "
              f"{versus:>18s} {z:>6s}")
    for name, r in rows.items():
        if "budget_rule" in r.metrics:
            print(f"{name}: {r.metrics['budget_rule']}")
    m = reference.metrics
    rule = (f"reward at a KL budget of {m['kl_budget']:g} nats" if m.get("kl_budget")
            else f"reward - {m['kl_weight']} x KL")
    print(f"fitness = {rule}; reward and KL columns: the trained policy's own; standard "
          f"error: {m['fitness_stderr']}")


def verdicts(rows: dict[str, SimpleNamespace]) -> list[tuple[str, bool]]:
    """The check's conditions, each with whether it holds."""
    from selfdisco.stats import TIE_SE, difference

    dpo, control = rows["dpo"], rows["dpo_weak"]
    z_opposite = z_score(difference(dpo, rows["opposite_dpo"]))
    z_base = z_score(difference(dpo, rows["base"]))
    z_control = z_score(difference(control, dpo))
    dominates = (control.metrics["reward"] >= dpo.metrics["reward"]
                 and control.metrics["kl"] <= dpo.metrics["kl"])
    control_ok = control.fitness <= dpo.fitness or dominates or z_control >= TIE_SE
    return [(f"dpo - opposite_dpo = {z_opposite:+.1f} standard errors (>= 3)", z_opposite >= 3),
            (f"dpo - base = {z_base:+.1f} standard errors (>= 3)", z_base >= 3),
            (f"dpo_weak does not outrank dpo (dpo_weak - dpo = {z_control:+.1f} standard "
             f"errors; better on both reward and KL: {dominates})", control_ok)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="smoke (a quick try), cpu (default)")
    parser.add_argument("--out", default="checkpoints/checks/sentiment-separation")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="training setting override KEY=VALUE")
    parser.add_argument("--option", action="append", default=[],
                        help="sentiment task option KEY=VALUE")
    parser.add_argument("--cache", default=None,
                        help="cache directory for pairs and reference log-probs "
                             "(default: checkpoints/cache)")
    parser.add_argument("--reuse-adapters", action="store_true",
                        help="evaluate adapters already trained under --out instead of training")
    args = parser.parse_args()

    from selfdisco.config import load_config
    from selfdisco.llm.models import resolve_model
    from selfdisco.llm.server import VLLMServer
    from selfdisco.losses import catalog, compile_loss
    from selfdisco.rundir.paths import checkpoints_dir
    from selfdisco.tasks import TaskContext, get_task
    from selfdisco.train.adapter import train_adapter

    task = get_task("sentiment")
    model_path = resolve_model(load_config(args.preset).models.policy)
    settings = task.train_settings(args.preset).with_overrides(**parse_overrides(args.overrides))
    options = dict(item.partition("=")[::2] for item in args.option)
    out = Path(args.out)
    cache = Path(args.cache) if args.cache else checkpoints_dir() / "cache"
    timings: dict[str, float] = {}
    print(f"model {model_path}\ntraining settings {settings.to_dict()}")

    started = time.perf_counter()
    with VLLMServer(model_path, log_path=out / "server.log", max_lora_rank=16) as server:
        timings["server start"] = time.perf_counter() - started
        ctx = TaskContext(client=server.client(), model_path=model_path,
                          cache_dir=cache, preset=args.preset,
                          options=options, dtype=server.dtype)
        step = time.perf_counter()
        pairs = task.preference_data(ctx)
        timings["preference pairs"] = time.perf_counter() - step
        print(f"{len(pairs)} preference pairs, e.g. {json.dumps(pairs[0])}")

        dpo_code = catalog.get("dpo").candidate.code
        weak = settings.with_overrides(beta=settings.beta / 4)
        losses = {"dpo": (dpo_code, settings), "opposite_dpo": (OPPOSITE_DPO, settings),
                  "dpo_weak": (dpo_code, weak)}
        adapters = {}
        for name, (code, recipe) in losses.items():
            saved = out / name / "adapter"
            if args.reuse_adapters and (saved / "adapter_config.json").exists():
                print(f"train {name}: reusing {saved}")
                adapters[name] = str(saved)
                continue
            step = time.perf_counter()
            result = train_adapter(model_path=model_path, data=pairs, settings=recipe,
                                   out_dir=out / name, loss_fn=compile_loss(code),
                                   ref_cache_dir=cache / "ref")
            timings[f"train {name}"] = time.perf_counter() - step
            print(f"train {name}: {result.status}, {result.steps_done} steps, "
                  f"{result.seconds_per_step or 0:.2f} s/step, peak RSS "
                  f"{result.peak_rss_mb or 0:.0f} MB, reward accuracy "
                  f"{result.metrics.get('rewards/accuracies')}, error {result.error}")
            if not result.ok:
                return 1
            adapters[name] = result.adapter_path

        rows = {}
        for name, adapter in (("base", None), *adapters.items()):
            step = time.perf_counter()
            fitness = task.score(ctx, adapter_path=adapter)
            timings[f"evaluate {name}"] = time.perf_counter() - step
            if not fitness.ok:
                print(f"{name}: {fitness.summary()}")
                return 1
            rows[name] = row(name, fitness, losses[name][0] if adapter else None)
            metrics = fitness.metrics
            print(f"{name:13s} mean tokens {metrics['mean_tokens']:.1f} [{metrics['scorer']}] "
                  f"(sampling {metrics['sampling_seconds']:.1f} s, KL "
                  f"{metrics.get('kl_seconds', 0.0):.1f} s)")

    print_table(rows, rows["dpo"])
    print(f"dpo_weak: beta {weak.beta:g} against dpo's {settings.beta:g}; one training seed "
          "each, so the errors hold sampling noise only")
    print("\nseconds per step:")
    for name, seconds in timings.items():
        print(f"  {name:22s} {seconds:7.1f}")
    results = verdicts(rows)
    for text, held in results:
        print(f"{'ok  ' if held else 'FAIL'} {text}")
    passed = all(held for _, held in results)
    print("\nPASS" if passed else "\nFAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the sentiment fitness tell a good loss from a bad one? Prints the numbers and timings.

On the cpu preset (SmolLM2-135M served by vLLM on CPU): make preference pairs from the
reference policy, train one LoRA adapter with dpo and one with the opposite loss (dpo applied to
-rho, which prefers the rejected continuation), and score the base model and both adapters on
the held-out openings. The check passes when dpo beats the opposite loss by at least three
standard errors (of the difference) and beats the untrained base.

Run: python scripts/check_sentiment_separation.py [--preset cpu] [--set KEY=VALUE ...]
(--set overrides training settings, e.g. --set max_steps=64 --set learning_rate=5e-4).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

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


def separation(a, b) -> float:
    """(a - b) in standard errors of the difference (independent estimates)."""
    return (a.value - b.value) / math.sqrt(a.stderr ** 2 + b.stderr ** 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
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

    from selfdisco.llm.server import VLLMServer
    from selfdisco.losses import catalog, compile_loss
    from selfdisco.models import resolve_model
    from selfdisco.paths import checkpoints_dir
    from selfdisco.tasks import TaskContext, get_task
    from selfdisco.train import train_adapter
    from selfdisco.train.settings import PRESET_MODELS

    task = get_task("sentiment")
    model_path = resolve_model(PRESET_MODELS[args.preset])
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
                          options=options)
        step = time.perf_counter()
        pairs = task.preference_data(ctx)
        timings["preference pairs"] = time.perf_counter() - step
        print(f"{len(pairs)} preference pairs, e.g. {json.dumps(pairs[0])}")

        losses = {"dpo": compile_loss(catalog.get("dpo").candidate.code),
                  "opposite_dpo": compile_loss(OPPOSITE_DPO)}
        adapters = {}
        for name, loss_fn in losses.items():
            saved = out / name / "adapter"
            if args.reuse_adapters and (saved / "adapter_config.json").exists():
                print(f"train {name}: reusing {saved}")
                adapters[name] = str(saved)
                continue
            step = time.perf_counter()
            result = train_adapter(model_path=model_path, data=pairs, settings=settings,
                                   out_dir=out / name, loss_fn=loss_fn,
                                   ref_cache_dir=cache / "ref")
            timings[f"train {name}"] = time.perf_counter() - step
            print(f"train {name}: {result.status}, {result.steps_done} steps, "
                  f"{result.seconds_per_step or 0:.2f} s/step, peak RSS "
                  f"{result.peak_rss_mb or 0:.0f} MB, reward accuracy "
                  f"{result.metrics.get('rewards/accuracies')}, error {result.error}")
            if not result.ok:
                return 1
            adapters[name] = result.adapter_path

        fitness = {}
        for name, adapter in (("base", None), *adapters.items()):
            step = time.perf_counter()
            fitness[name] = task.evaluate(ctx, adapter_path=adapter)
            timings[f"evaluate {name}"] = time.perf_counter() - step
            metrics = fitness[name].metrics
            print(f"{name:13s} reward {fitness[name].summary()}  KL {metrics['kl']:.3f} ± "
                  f"{metrics['kl_stderr']:.3f}  mean tokens {metrics['mean_tokens']:.1f}  "
                  f"[{metrics['scorer']}]  (sampling {metrics['sampling_seconds']:.1f} s, KL "
                  f"{metrics.get('kl_seconds', 0.0):.1f} s)")

    dpo, opposite, base = fitness["dpo"], fitness["opposite_dpo"], fitness["base"]
    z_opposite, z_base = separation(dpo, opposite), separation(dpo, base)
    print(f"\ndpo - opposite_dpo = {dpo.value - opposite.value:+.4f} ({z_opposite:.1f} standard "
          f"errors of the difference)")
    print(f"dpo - base         = {dpo.value - base.value:+.4f} ({z_base:.1f} standard errors)")
    print("\nseconds per step:")
    for name, seconds in timings.items():
        print(f"  {name:22s} {seconds:7.1f}")
    passed = z_opposite >= 3 and dpo.value > base.value
    print("\nPASS" if passed else "\nFAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

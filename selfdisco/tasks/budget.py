"""Reward at a fixed KL budget: every policy compared at the same distance from the reference.

A LoRA policy is the reference plus a low-rank delta; scaling the delta by s in [0, 1] walks a
path from the reference (s = 0, KL 0) to the trained policy (s = 1). KL grows about as s^2 along
it, so s = sqrt(target / KL) lands near a target KL. A policy whose KL exceeds the budget B is
measured again at such a shrunk scale (aimed at 0.9 B, so that the shrunk point falls under the
budget and the trained one over it), and its fitness is the reward at KL = B, interpolated
linearly in KL between the two points, prompt by prompt (the same prompts and sampling seeds
for every policy, so paired comparisons hold). A policy at or under the budget is scored at its
own KL: it did not use all of it. Drift past the budget therefore buys nothing, and two losses
are compared by the reward they reach at the same KL: one slice of the paper's reward-vs-KL
frontier. On a concave frontier the chord reads a little low, more so the further the policy
drifted (0.4% at 1.3 x the budget, 3% at 2.7 x on a saturating curve; tests): it errs toward
less drift. The standard error treats the interpolation weight as fixed (it ignores the noise
of the two KL estimates that set it).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfdisco import stats
from selfdisco.formatting import format_kl

AIM = 0.9
"""Shrunk scales aim at this fraction of the budget, so the budget lies between the points."""
MAX_SHRINKS = 3
"""Shrunk measurements aimed at the budget; when none falls under it, the reference itself
(scale 0, KL 0 by construction) is measured and the budget read between it and the lowest."""


@dataclass
class Point:
    """One policy measured on the held-out prompts: per prompt rewards and KL estimates."""

    scale: float
    rewards: list[list[float]]
    kls: list[list[float]]

    @property
    def prompt_rewards(self) -> list[float]:
        return [sum(r) / len(r) for r in self.rewards if r]

    @property
    def reward(self) -> float:
        return stats.mean(self.prompt_rewards)

    @property
    def kl(self) -> float:
        return stats.mean([k for ks in self.kls for k in ks])

    def summary(self) -> dict[str, float | None]:
        reward, reward_stderr = stats.mean_stderr(self.prompt_rewards)
        kl, kl_stderr = stats.mean_stderr([k for ks in self.kls for k in ks])
        return {"scale": round(self.scale, 4), "reward": reward, "reward_stderr": reward_stderr,
                "kl": kl, "kl_stderr": kl_stderr}


def reach_budget(full: Point, budget: float, measure: Callable[[float], Point]) -> list[Point]:
    """`full` and the shrunk points measured until one falls at or under `budget`.

    Args:
        full: the trained policy (scale 1).
        budget: the KL budget in nats (> 0).
        measure: measures the policy at a scale of its delta.
    """
    points = [full]
    last = full
    for _ in range(MAX_SHRINKS):
        if last.kl <= budget or not last.kl > 0:
            break
        last = measure(last.scale * math.sqrt(AIM * budget / last.kl))
        points.append(last)
    if min(p.kl for p in points) > budget:  # KL did not follow s^2 down: use the reference
        points.append(measure(0.0))
    return points


def at_budget(points: list[Point], budget: float) -> tuple[list[float], dict]:
    """Per prompt rewards at KL = budget, and how they were read off `points`.

    Interpolates between the point nearest under the budget and the one nearest over it; a
    trained policy (points[0]) at or under the budget is read as it is. Empty values when no
    point reached the budget.
    """
    full = points[0]
    if full.kl <= budget:
        return full.prompt_rewards, {"rule": f"under the budget: reward at its own KL "
                                              f"{format_kl(full.kl)}", "weight": 0.0}
    under = [p for p in points if p.kl <= budget]
    if not under:
        return [], {"rule": f"KL stayed above the budget {budget:g} at every scale measured, "
                            f"the reference's included (lowest "
                            f"{format_kl(min(p.kl for p in points))})"}
    low = max(under, key=lambda p: p.kl)
    high = min((p for p in points if p.kl > budget), key=lambda p: p.kl)
    weight = (high.kl - budget) / (high.kl - low.kl)
    values = [weight * a + (1 - weight) * b
              for a, b in zip(low.prompt_rewards, high.prompt_rewards, strict=True)]
    return values, {"rule": f"reward at KL {budget:g}, interpolated between scales "
                            f"{low.scale:.3f} (KL {format_kl(low.kl)}) and {high.scale:.3f} "
                            f"(KL {format_kl(high.kl)})", "weight": weight}


def scaled_adapter(adapter_path: str | Path, scale: float, out_dir: Path) -> Path:
    """A copy of a LoRA adapter whose delta is multiplied by `scale` (its lora_B weights)."""
    # lazy: loads safetensors
    from safetensors.torch import load_file, save_file

    source = Path(adapter_path)
    weights = source / "adapter_model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found: only safetensors adapters can be scaled")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "adapter_config.json", out_dir / "adapter_config.json")
    tensors = load_file(str(weights))
    if not any("lora_B" in name for name in tensors):
        raise ValueError(f"{weights} has no lora_B weights to scale")
    scaled = {name: t * scale if "lora_B" in name else t for name, t in tensors.items()}
    save_file(scaled, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "scale.json").write_text(json.dumps({"source": str(source), "scale": scale}))
    return out_dir

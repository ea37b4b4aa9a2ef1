"""Reward at a fixed KL budget: every policy compared at the same distance from the reference.

A LoRA policy is the reference plus a low-rank delta; scaling the delta by s walks a line
through the reference (s = 0, KL 0) and the trained policy (s = 1), on past it for s > 1. KL
grows about as s^p along it (p = 2 for small deltas, about 1.6 on the cpu recipe's policies:
growth), so s = (target / KL)^(1/p) lands near a target KL. Every policy is
measured again at such a scale: shrunk when it drifted past the budget B (aimed at 0.9 B),
grown when it stopped under it (aimed at B / 0.9, at most MAX_SCALE), until two measured points
bracket B; its fitness is the reward at KL = B, interpolated linearly in KL between them, prompt
by prompt (the same prompts and sampling seeds for every policy, so paired comparisons hold).
Drift past the budget buys nothing and restraint under it costs nothing: two losses are compared
by the reward their direction reaches at the same KL, one slice of the paper's reward-vs-KL
frontier, not by how far 32 steps carried them. Measured on the cpu recipe
(scripts/fitness_rules.py), the earlier rule (a policy under the budget scored at its own KL)
tied fitness to KL; docs/fitness.md has the figures. A policy that stays under the budget even
at MAX_SCALE barely trained and is scored at its highest measured KL, which the rule says.

On a concave frontier the chord reads a little low, more so the further the bracketing points
lie from the budget (0.4% at 1.3 x the budget, 3% at 2.7 x on a saturating curve; tests). The
noise of the two KL estimates that set the interpolation weight is carried into each prompt's
value (linearised: the reading moves by -slope x each point's KL error, weighted), so the
fitness's standard error and every paired difference include it.

Runs scored before this rule (fitness_version 1 in the sentiment task) keep the old one: no
growth, a policy under the budget read at its own KL, the interpolation weight taken as fixed.

The held-out frontier walks the same path further: scaling_path measures the policy shrunk to
aim at each of a few common KL values, and read_at reads the per-prompt reward at any KL between
two measured points (PathPoint: what a frontier point records of each), with the variance that
the noise of those two KL estimates adds to the reading (the delta method).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.formatting import format_kl

AIM = 0.9
"""Shrunk scales aim at this fraction of the budget, grown ones at the budget over it, so that
the budget lies between the points."""
MAX_SHRINKS = 3
"""Measurements aimed at the budget; when none falls under it, the reference itself (scale 0,
KL 0 by construction) is measured and the budget read between it and the lowest."""
MAX_SCALE = 4.0
"""The largest scale a policy under the budget is grown to (KL about 16 times its own)."""


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
    def prompt_kls(self) -> list[float | None]:
        """Each scored prompt's mean KL (None where none was estimated), in the order of
        prompt_rewards."""
        return [sum(k) / len(k) if k else None for r, k in zip(self.rewards, self.kls,
                                                                  strict=True) if r]

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

    def path_point(self) -> PathPoint:
        """What the frontier keeps of this point: per prompt means, the KL and its error."""
        kls = [k for ks in self.kls for k in ks]
        kl, kl_stderr = stats.mean_stderr(kls)
        return PathPoint(scale=self.scale, per_prompt=self.prompt_rewards, kl=kl,
                         kl_stderr=kl_stderr, kl_n=len(kls),
                         per_prompt_kl=[sum(k) / len(k) if k else None for k in self.kls])


def brackets(points: list[Point], budget: float) -> bool:
    """A point at or under the budget and one over it."""
    return (any(p.kl <= budget for p in points)
            and any(p.kl > budget for p in points))


def reach_budget(full: Point, budget: float, measure: Callable[[float], Point],
                 grow: bool = True) -> list[Point]:
    """`full` and the points measured until two bracket `budget`.

    Args:
        full: the trained policy (scale 1).
        budget: the KL budget in nats (> 0).
        measure: measures the policy at a scale of its delta (0: the reference).
        grow: also grow a policy under the budget (up to MAX_SCALE); False: the rule of
            fitness_version 1, which measures only a policy over it.
    """
    points = [full]
    for _ in range(MAX_SHRINKS):
        if brackets(points, budget) or not grow and full.kl <= budget:
            break
        over = [p for p in points if p.kl > budget]
        if over:
            near = min(over, key=lambda p: p.kl)
            scale = near.scale * (AIM * budget / near.kl) ** (1 / growth(points))
        else:
            near = max(points, key=lambda p: p.kl)
            if not near.kl > 0 or near.scale >= MAX_SCALE:
                break  # it does not move, or it is grown as far as it goes
            scale = min(near.scale * (budget / AIM / near.kl) ** (1 / growth(points)),
                        MAX_SCALE)
        points.append(measure(scale))
    if min(p.kl for p in points) > budget:  # KL did not follow s^2 down: use the reference
        points.append(measure(0.0))
    return points


def growth(points: list[Point]) -> float:
    """The exponent p of KL ~ scale^p between the two measured points with KL above 0 and the
    highest scales, within [1, 3]; 2 (small deltas) before there are two. On the cpu recipe KL
    grew about as scale^1.6 between scales 0.34 and 1, so aiming by s^2 alone landed over the
    budget and took a second shrink."""
    moved = sorted((p for p in points if p.kl > 0 and p.scale > 0), key=lambda p: -p.scale)
    if len(moved) < 2 or moved[0].scale == moved[1].scale:
        return 2.0
    a, b = moved[0], moved[1]
    return min(max(math.log(a.kl / b.kl) / math.log(a.scale / b.scale), 1.0), 3.0)


def at_budget(points: list[Point], budget: float,
              grow: bool = True) -> tuple[list[float], dict]:
    """Per prompt rewards at KL = budget, and how they were read off `points`.

    Interpolates between the point nearest under the budget and the one nearest over it, each
    prompt's value carrying the noise of the two KL estimates (module docstring). Where no
    point lies over the budget (a policy grown to MAX_SCALE still under it), the highest
    point's rewards. Empty values when no point reached down to the budget. grow=False: the
    rule of fitness_version 1 (a trained policy, points[0], at or under the budget read as it
    is; the weight taken as fixed).
    """
    full = points[0]
    if not grow and full.kl <= budget:
        return full.prompt_rewards, {"rule": f"under the budget: reward at its own KL "
                                              f"{format_kl(full.kl)}", "weight": 0.0}
    under = [p for p in points if p.kl <= budget]
    over = [p for p in points if p.kl > budget]
    if not under:
        return [], {"rule": f"KL stayed above the budget {budget:g} at every scale measured, "
                            f"the reference's included (lowest "
                            f"{format_kl(min(p.kl for p in points))})"}
    low = max(under, key=lambda p: p.kl)
    if not over:
        return low.prompt_rewards, {
            "rule": f"under the budget at every scale measured, up to {low.scale:.3f}: reward "
                    f"at its highest KL {format_kl(low.kl)}", "weight": 1.0}
    high = min(over, key=lambda p: p.kl)
    weight = (high.kl - budget) / (high.kl - low.kl)
    values = [weight * a + (1 - weight) * b
              for a, b in zip(low.prompt_rewards, high.prompt_rewards, strict=True)]
    if grow:
        values = with_kl_noise(values, low, high, weight)
    return values, {"rule": f"reward at KL {budget:g}, interpolated between scales "
                            f"{low.scale:.3f} (KL {format_kl(low.kl)}) and {high.scale:.3f} "
                            f"(KL {format_kl(high.kl)})", "weight": weight}


def with_kl_noise(values: list[float], low: Point, high: Point, weight: float) -> list[float]:
    """Each prompt's interpolated value plus its share of the KL estimates' noise.

    The reading R = w a + (1 - w) b with w = (K_high - B) / (K_high - K_low) moves by
    -slope x w per nat of error in K_low and by -slope x (1 - w) in K_high (slope: reward per
    nat between the points). Adding those terms, prompt j's KL deviation from the mean over the
    prompts with one, leaves the mean unchanged and puts the KL noise, with its correlation to
    the reward's, into the spread over prompts (a linearised, influence-function standard
    error). A prompt without a KL estimate adds nothing.
    """
    slope = (high.reward - low.reward) / (high.kl - low.kl)
    terms = [0.0] * len(values)
    for point, share in ((low, weight), (high, 1 - weight)):
        kls = point.prompt_kls
        known = [k for k in kls if k is not None]
        if not known:
            continue
        mean = sum(known) / len(known)
        for j, k in enumerate(kls):
            if k is not None:
                terms[j] -= slope * share * (k - mean)
    return [v + t for v, t in zip(values, terms, strict=True)]


# ---- the scaling path, for the held-out frontier --------------------------------------------

@dataclass(frozen=True)
class PathPoint:
    """One policy measured on a scaling path, as a frontier point records it (metrics["path"]).

    per_prompt: the mean reward of each held-out prompt, in prompt order (the same prompts and
    sampling seeds for every policy); kl, kl_stderr, kl_n: the KL estimate, its standard error
    and its sample count; per_prompt_kl: each prompt's mean KL (None where none was estimated).
    """

    scale: float
    per_prompt: list[float]
    kl: float
    kl_stderr: float | None
    kl_n: int
    per_prompt_kl: list[float | None]

    @property
    def reward(self) -> float:
        return stats.mean(self.per_prompt)

    def to_json(self) -> dict[str, Any]:
        return {"scale": round(self.scale, 4), "reward": self.reward, "kl": self.kl,
                "kl_stderr": self.kl_stderr, "kl_n": self.kl_n,
                "per_prompt": [round(v, 6) for v in self.per_prompt],
                "per_prompt_kl": [None if k is None else round(k, 5)
                                  for k in self.per_prompt_kl]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PathPoint:
        """ValueError for a record that is not one (a missing or mistyped field)."""
        try:
            kl_stderr = data.get("kl_stderr")
            return cls(scale=float(data["scale"]),
                       per_prompt=[float(v) for v in data["per_prompt"]],
                       kl=float(data["kl"]),
                       kl_stderr=None if kl_stderr is None else float(kl_stderr),
                       kl_n=int(data.get("kl_n") or 0),
                       per_prompt_kl=[None if k is None else float(k)
                                      for k in data.get("per_prompt_kl") or []])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"not a path point: {err}") from None


def parse_kl_targets(text: str) -> tuple[float, ...]:
    """Comma-separated KL values in nats, ascending and without repeats; ValueError naming the
    bad one (each must be a number above 0)."""
    values = set()
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number") from None
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{part} is not a KL above 0")
        values.add(value)
    return tuple(sorted(values))


def scaling_path(full: Point, targets: tuple[float, ...],
                 measure: Callable[[float], Point]) -> list[Point]:
    """`full` and the policy shrunk to aim at each target under its KL, highest first.

    Each shrink starts from the measured point nearest over its target (scale * sqrt(target /
    KL)); the lowest aims at AIM x its target so that a point falls under every target. Where
    KL did not follow s^2 and none does, the reference (scale 0, KL 0) is measured too. One
    measurement per target under the full KL, then at most the reference's.

    Args:
        full: the trained policy (scale 1).
        targets: KL values in nats (> 0); those at or over full's KL are not on its path.
        measure: measures the policy at a scale of its delta (0: the reference).
    """
    points = [full]
    reached = sorted((t for t in targets if t < full.kl), reverse=True)
    for target in reached:
        above = min((p for p in points if p.kl > target), key=lambda p: p.kl)
        aim = AIM * target if target == reached[-1] else target
        points.append(measure(above.scale * math.sqrt(aim / above.kl)))
    if reached and min(p.kl for p in points) > reached[-1]:
        points.append(measure(0.0))
    return points


@dataclass(frozen=True)
class Reading:
    """A path read at one KL: per prompt rewards interpolated between two measured points.

    kl_variance: the variance of the mean reading that the two KL estimates' noise adds, by the
    delta method: the reading moves by slope x the error of each KL estimate (weights w and
    1 - w), the two errors taken as fully correlated (the policies share prompts and sampling
    seeds), which bounds it from above. kl_df: its degrees of freedom (the fewer KL samples,
    less 1); None when no KL error was estimated.
    """

    target: float
    values: list[float]
    low: PathPoint
    high: PathPoint
    weight: float  # on low
    kl_variance: float
    kl_df: int | None

    @property
    def reward(self) -> float:
        return stats.mean(self.values)


def read_at(path: list[PathPoint], target: float) -> Reading | None:
    """The path's per-prompt reward at KL = target, read linearly in KL between the measured
    point nearest at or under the target and the one nearest over it; None when the path does
    not reach past the target, has no point at or under it, or its points' prompts differ."""
    under = [p for p in path if p.kl <= target]
    over = [p for p in path if p.kl > target]
    if not under or not over:
        return None
    low = max(under, key=lambda p: p.kl)
    high = min(over, key=lambda p: p.kl)
    if len(low.per_prompt) != len(high.per_prompt) or not low.per_prompt:
        return None
    weight = (high.kl - target) / (high.kl - low.kl)
    values = [weight * a + (1 - weight) * b
              for a, b in zip(low.per_prompt, high.per_prompt, strict=True)]
    slope = (high.reward - low.reward) / (high.kl - low.kl)
    kl_sd = weight * (low.kl_stderr or 0.0) + (1 - weight) * (high.kl_stderr or 0.0)
    counts = [p.kl_n for p in (low, high) if p.kl_stderr and p.kl_n >= 2]
    return Reading(target=target, values=values, low=low, high=high, weight=weight,
                   kl_variance=(slope * kl_sd) ** 2, kl_df=min(counts) - 1 if counts else None)


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

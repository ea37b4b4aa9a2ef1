"""Reward at a fixed KL budget: shrinking a LoRA delta, and reading the reward at the budget;
the scaling path toward common KL values that the held-out frontier reads."""

from __future__ import annotations

import math

import pytest

from selfdisco.tasks.budget import (
    AIM,
    MAX_SCALE,
    MAX_SHRINKS,
    PathPoint,
    Point,
    at_budget,
    parse_kl_targets,
    reach_budget,
    read_at,
    scaled_adapter,
    scaling_path,
)


def point(scale: float, rewards: list[float], kl: float) -> Point:
    return Point(scale=scale, rewards=[[r, r] for r in rewards], kls=[[kl] for _ in rewards])


def quadratic_policy(full_kl: float, reward_at):
    """A policy whose KL grows as scale^2 and whose reward is reward_at(KL), on 4 prompts."""
    calls = []

    def measure(scale: float) -> Point:
        calls.append(scale)
        kl = full_kl * scale ** 2
        return point(scale, [reward_at(kl) + d for d in (-0.1, 0.0, 0.0, 0.1)], kl)
    return measure, calls


def test_a_policy_under_the_budget_is_grown_to_it_and_read_there():
    measure, calls = quadratic_policy(4.0, lambda kl: 0.1 * kl)
    full = measure(1.0)
    points = reach_budget(full, 6.0, measure)
    assert calls == [1.0, pytest.approx(math.sqrt(6.0 / AIM / 4.0))]
    assert points[1].kl == pytest.approx(6.0 / AIM)
    values, how = at_budget(points, 6.0)
    # The reward is linear in KL here, so interpolation gives it exactly at KL 6.
    assert sum(values) / len(values) == pytest.approx(0.1 * 6.0)
    assert "interpolated between scales 1.000" in how["rule"]


def test_restraint_is_not_ranked_below_drift_on_the_same_frontier():
    """Two losses on one concave frontier, one stopping at KL 3 and one drifting to 10: read
    at the budget of 6 each is brought there, so both read the frontier at 6 up to the chord's
    small error (2% low here), where the rule of fitness_version 1 put the restrained one
    a third lower."""
    frontier = lambda kl: 0.6 * (1 - math.exp(-kl / 5))  # noqa: E731
    restrained, _ = quadratic_policy(3.0, frontier)
    drifted, _ = quadratic_policy(10.0, frontier)
    low = sum(at_budget(reach_budget(restrained(1.0), 6.0, restrained), 6.0)[0]) / 4
    high = sum(at_budget(reach_budget(drifted(1.0), 6.0, drifted), 6.0)[0]) / 4
    assert low == pytest.approx(frontier(6.0), rel=0.025)
    assert high == pytest.approx(frontier(6.0), rel=0.025)
    assert low == pytest.approx(high, rel=0.005)
    old = sum(at_budget(reach_budget(restrained(1.0), 6.0, restrained, grow=False), 6.0,
                        grow=False)[0]) / 4
    assert old < 0.7 * high


def test_fitness_version_1_reads_a_policy_under_the_budget_as_it_is():
    measure, calls = quadratic_policy(4.0, lambda kl: 0.1 * kl)
    full = measure(1.0)
    points = reach_budget(full, 6.0, measure, grow=False)
    assert points == [full] and calls == [1.0]
    values, how = at_budget(points, 6.0, grow=False)
    assert values == full.prompt_rewards and "under the budget" in how["rule"]


def test_a_policy_that_barely_moves_is_grown_no_further_than_max_scale():
    measure, calls = quadratic_policy(0.01, lambda kl: 0.1 * kl)
    points = reach_budget(measure(1.0), 6.0, measure)
    assert max(calls) == MAX_SCALE and len(calls) <= 1 + MAX_SHRINKS
    values, how = at_budget(points, 6.0)
    assert sum(values) / 4 == pytest.approx(0.1 * 0.01 * MAX_SCALE ** 2)
    assert "under the budget at every scale measured, up to 4.000" in how["rule"]


def test_a_policy_that_does_not_move_is_not_grown():
    measure, calls = quadratic_policy(0.0, lambda kl: 0.1 * kl)
    points = reach_budget(measure(1.0), 6.0, measure)
    assert calls == [1.0] and len(points) == 1


def test_the_kl_estimates_noise_is_in_the_per_prompt_values():
    """Prompt KLs that vary around each point's mean leave the mean reading unchanged and
    widen its spread by -slope x the weighted deviations."""
    low = Point(scale=1.0, rewards=[[0.2]] * 4, kls=[[4.0], [5.0], [3.0], [4.0]])
    high = Point(scale=1.3, rewards=[[0.4]] * 4, kls=[[8.0], [9.0], [7.0], [8.0]])
    values, how = at_budget([low, high], 6.0)
    assert how["weight"] == pytest.approx(0.5)
    assert sum(values) / 4 == pytest.approx(0.3)
    slope = 0.2 / 4.0
    assert values == pytest.approx([0.3, 0.3 - slope, 0.3 + slope, 0.3])
    # The rule of fitness_version 1 takes the weight as fixed: no spread at all.
    assert at_budget([high, low], 6.0, grow=False)[0] == pytest.approx([0.3] * 4)


def test_over_the_budget_one_shrink_lands_under_it_and_the_reward_is_interpolated():
    measure, calls = quadratic_policy(10.0, lambda kl: 0.05 * kl)
    points = reach_budget(measure(1.0), 6.0, measure)
    assert len(points) == 2 and points[1].kl == pytest.approx(AIM * 6.0)
    assert calls[1] == pytest.approx(math.sqrt(AIM * 6.0 / 10.0))
    values, how = at_budget(points, 6.0)
    # The reward is linear in KL here, so interpolation gives it exactly at KL 6.
    assert sum(values) / len(values) == pytest.approx(0.05 * 6.0)
    assert "interpolated" in how["rule"] and 0 < how["weight"] < 1


def test_drift_past_the_budget_does_not_win_on_its_own():
    """Two policies on one concave frontier (reward = f(KL)), one trained twice as far: about
    the same fitness at the budget, though the far one has the higher raw reward. The chord
    between the shrunk point and the far one reads a little low (errs toward less drift)."""
    frontier = lambda kl: 0.6 * (1 - math.exp(-kl / 5))  # noqa: E731
    near_measure, _ = quadratic_policy(8.0, frontier)
    far_measure, _ = quadratic_policy(16.0, frontier)
    near, far = near_measure(1.0), far_measure(1.0)
    assert far.reward > near.reward
    near_value = at_budget(reach_budget(near, 6.0, near_measure), 6.0)[0]
    far_value = at_budget(reach_budget(far, 6.0, far_measure), 6.0)[0]
    truth = frontier(6.0)
    assert truth - 0.02 < sum(far_value) / 4 <= sum(near_value) / 4 <= truth
    # A better frontier wins at the budget even with less drift.
    better, _ = quadratic_policy(7.0, lambda kl: frontier(kl) + 0.05)
    assert (sum(at_budget(reach_budget(better(1.0), 6.0, better), 6.0)[0])
            > sum(far_value))


def test_a_kl_that_will_not_come_down_gives_no_value():
    def stubborn(scale: float) -> Point:
        return point(scale, [0.5, 0.4], 9.0)
    points = reach_budget(stubborn(1.0), 6.0, stubborn)
    assert [p.scale for p in points][-1] == 0.0 and len(points) == 5
    values, how = at_budget(points, 6.0)
    assert values == [] and "stayed above the budget" in how["rule"]


def test_a_kl_that_floors_above_the_budget_is_read_against_the_reference():
    # KL falls slower than s^2 (here it floors at 6.08 for any s > 0): three shrinks stay over
    # the budget, so the reference (scale 0: KL 0, the base's rewards) is the point under it.
    def floored(scale: float) -> Point:
        kl = 0.0 if scale == 0 else max(6.08, 12.0 * scale ** 2)
        return point(scale, [0.2 + 0.5 * scale, 0.1 + 0.5 * scale], kl)
    points = reach_budget(floored(1.0), 6.0, floored)
    assert [p.scale for p in points][-1] == 0.0 and len(points) == 5
    values, how = at_budget(points, 6.0)
    high = next(p for p in points if p.kl == 6.08)  # the first point nearest over the budget
    weight = (high.kl - 6.0) / high.kl
    expected = [weight * a + (1 - weight) * b
                for a, b in zip([0.2, 0.1], high.prompt_rewards, strict=True)]
    assert values == pytest.approx(expected) and "scales 0.000 (KL 0.000)" in how["rule"]


def test_scaling_the_delta_scales_the_policy_and_zero_is_the_reference(tmp_path):
    from conftest import make_random_lora_adapter
    from safetensors.torch import load_file

    from selfdisco.llm.models import resolve_model
    from selfdisco.tasks.kl import sequence_kls
    from selfdisco.tasks.sampling import Sample

    model = resolve_model("smoke-llama")
    adapter = make_random_lora_adapter(model, tmp_path / "adapter", seed=3)
    samples = [Sample(i, "", [7 + i, 8, 9, 10], None, "length", [5, 17 + i])
               for i in range(4)]
    kls = {scale: sum(k.exact for k in sequence_kls(
               model, str(scaled_adapter(adapter, scale, tmp_path / f"x{scale}")), samples))
           for scale in (0.0, 0.5, 1.0, 2.0)}
    full = sum(k.exact for k in sequence_kls(model, str(adapter), samples))
    assert kls[0.0] == 0.0
    assert kls[1.0] == pytest.approx(full, abs=1e-5)
    assert kls[0.5] != pytest.approx(full, abs=1e-3)
    assert kls[0.5] < kls[1.0] < kls[2.0]  # grown past the trained policy, it moves further
    original = load_file(str(adapter / "adapter_model.safetensors"))
    half = load_file(str(tmp_path / "x0.5" / "adapter_model.safetensors"))
    for name, tensor in original.items():
        expected = tensor * 0.5 if "lora_B" in name else tensor
        assert (half[name] == expected).all(), name


def test_only_an_adapter_with_lora_weights_can_be_scaled(tmp_path):
    with pytest.raises(FileNotFoundError, match="safetensors"):
        scaled_adapter(tmp_path, 0.5, tmp_path / "out")


# ---- the scaling path (the held-out frontier's common KL values) ---------------------------

def test_the_path_takes_one_shrink_per_target_under_the_policys_kl():
    measure, calls = quadratic_policy(8.0, lambda kl: 0.05 * kl)
    path = scaling_path(measure(1.0), (3.0, 6.0, 12.0), measure)
    # 12 is past the trained policy's KL: not on its path. 6 is aimed at itself from the full
    # policy; the lowest, 3, at AIM x 3 from the point at 6, so that a point falls under it.
    assert [p.kl for p in path] == pytest.approx([8.0, 6.0, AIM * 3.0])
    assert calls[1:] == pytest.approx([math.sqrt(6 / 8), math.sqrt(6 / 8) * math.sqrt(2.7 / 6)])
    assert scaling_path(measure(1.0), (9.0,), measure)[1:] == []


def test_the_reference_closes_a_path_whose_kl_will_not_come_down():
    def floored(scale: float) -> Point:
        kl = 0.0 if scale == 0 else max(4.0, 8.0 * scale ** 2)
        return point(scale, [0.2 + 0.5 * scale, 0.1 + 0.5 * scale], kl)
    path = scaling_path(floored(1.0), (3.0,), floored)
    assert [p.scale for p in path][-1] == 0.0 and len(path) == 3
    reading = read_at([p.path_point() for p in path], 3.0)
    assert reading.low.scale == 0.0 and reading.weight == pytest.approx(1 / 4)


def test_a_path_point_survives_its_record_and_a_bad_record_is_a_value_error():
    full = point(1.0, [0.5, 0.25], 6.0).path_point()
    assert full.per_prompt == [0.5, 0.25] and full.kl == 6.0 and full.kl_n == 2
    assert PathPoint.from_json(full.to_json()) == full
    with pytest.raises(ValueError, match="not a path point"):
        PathPoint.from_json({"scale": 1.0, "kl": 2.0})
    with pytest.raises(ValueError, match="not a path point"):
        PathPoint.from_json(["scale"])


def test_reading_needs_a_point_on_each_side_of_the_kl():
    low = PathPoint(0.5, [0.2, 0.4], 2.0, 0.1, 10, [2.0, 2.0])
    high = PathPoint(1.0, [0.6, 0.8], 6.0, 0.3, 10, [6.0, 6.0])
    reading = read_at([high, low], 3.0)
    assert reading.weight == pytest.approx(0.75)
    assert reading.values == pytest.approx([0.75 * 0.2 + 0.25 * 0.6, 0.75 * 0.4 + 0.25 * 0.8])
    slope = 0.4 / 4
    assert reading.kl_variance == pytest.approx((slope * (0.75 * 0.1 + 0.25 * 0.3)) ** 2)
    assert read_at([high, low], 6.0) is None and read_at([high, low], 1.0) is None
    assert read_at([high, low], 2.0).values == pytest.approx(low.per_prompt)


def test_kl_targets_parse_to_sorted_positive_nats():
    assert parse_kl_targets("6, 3,3,") == (3.0, 6.0) and parse_kl_targets("") == ()
    for bad in ("three", "0", "-1", "inf"):
        with pytest.raises(ValueError):
            parse_kl_targets(bad)


def test_the_sentiment_score_records_the_path_toward_each_target(monkeypatch):
    """score() with kl_targets measures the trained policy shrunk toward each target (KL 8 s^2
    here), keeps every point in metrics["path"] and leaves the fitness as it was."""
    from pathlib import Path

    from selfdisco.tasks import TaskContext, get_task, sentiment

    measured = []

    def measure(self, ctx, settings, prompts, adapter_path, metrics):
        scale = (0.0 if adapter_path is None else 1.0 if adapter_path == "trained"
                 else float(str(adapter_path).split(":")[1]))
        measured.append(scale)
        kl = 8.0 * scale ** 2
        return Point(1.0, [[0.1 + 0.05 * kl] for _ in prompts],
                     [[kl] if adapter_path else [0.0] for _ in prompts])

    monkeypatch.setattr(sentiment, "scaled_adapter",
                        lambda adapter, scale, out: Path(f"scaled:{scale}"))
    monkeypatch.setattr(sentiment.SentimentTask, "measure", measure)
    task = get_task("sentiment")
    options = {"kl_budget": 0, "kl_targets": "3,6", "eval_prompts": "4"}
    fitness = task.score(TaskContext(options=options), adapter_path="trained")
    path = [PathPoint.from_json(p) for p in fitness.metrics["path"]]
    assert [p.kl for p in path] == pytest.approx([8.0, 6.0, AIM * 3.0])
    assert fitness.metrics["kl_targets"] == [3.0, 6.0] and len(measured) == 3
    assert fitness.value == pytest.approx(0.1 + 0.05 * 8.0)
    # The base policy has no path to walk.
    measured.clear()
    assert "path" not in task.score(TaskContext(options=options)).metrics
    assert measured == [0.0]

"""The reward-vs-KL frontier read per seed at common KL values: the paths each point records,
the paired comparison with the KL noise in it, Holm's correction over every claim, and rows
recorded before paths were kept. Rows are built in memory, measured as the sentiment task
measures them (budget.scaling_path on a simulated policy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.heldout import HeldoutContext, HeldoutLoss, frontier
from selfdisco.rundir.archive import HeldoutRow
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.budget import PathPoint, Point, scaling_path

TARGETS = (1.5, 2.5)
PROMPTS = 16


def curve(kl: float) -> float:
    """The reward every loss reaches at a KL, before its own offset: concave, saturating."""
    return 0.2 + 0.3 * (1 - math.exp(-kl / 4))


def simulated_metrics(rng, *, full_kl: float, offset: float, prompt_effects, noise: float = 0.02,
                      kl_sd: float = 0.5, targets=TARGETS) -> dict:
    """What a frontier point records for a policy whose KL grows as scale^2 to `full_kl`: each
    prompt's reward is curve(KL) + offset + its prompt effect + noise, each KL sample is off by
    N(0, kl_sd) (one per prompt; the reference's KL is exactly 0)."""
    def measure(scale: float) -> Point:
        kl = full_kl * scale ** 2
        rewards = [[curve(kl) + offset + g + rng.normal(0, noise)] for g in prompt_effects]
        kls = [[kl + rng.normal(0, kl_sd)] if scale else [0.0] for _ in prompt_effects]
        return Point(scale, rewards, kls)

    path = [p.path_point() for p in scaling_path(measure(1.0), targets, measure)]
    full = path[0]
    return {"reward": full.reward, "reward_stderr": float(np.std(full.per_prompt, ddof=1)
                                                          / math.sqrt(len(full.per_prompt))),
            "kl": full.kl, "kl_stderr": full.kl_stderr, "kl_targets": list(targets),
            "path": [p.to_json() for p in path]}


def row(loss: str, seed: int, metrics: dict, beta: float = 0.1) -> HeldoutRow:
    return HeldoutRow("frontier", loss, beta, seed, "done", {"loss_name": loss, **metrics})


def seed_effect_rows(margin: float, rng_seed: int = 0) -> list[HeldoutRow]:
    """Two losses, two fresh seeds with an effect common to both: seed 1 lands near KL 3 with
    higher reward at any KL, seed 2 near KL 7 with lower. Loss a is better than b by `margin`
    at every KL, but drifts a little further (so its mean KL is the higher)."""
    rng = np.random.default_rng(rng_seed)
    prompt_effects = rng.normal(0, 0.1, PROMPTS)
    seeds = {1: (0.05, 3.0), 2: (-0.05, 7.0)}  # seed -> (its reward effect, its KL)
    drift = {"a": 0.3, "b": 0.0}
    offsets = {"a": margin, "b": 0.0}
    return [row(loss, seed, simulated_metrics(rng, full_kl=kl + drift[loss],
                                              offset=effect + offsets[loss],
                                              prompt_effects=prompt_effects))
            for loss in ("a", "b") for seed, (effect, kl) in seeds.items()]


@pytest.fixture
def run_dir(tmp_path):
    """A run directory with its config (the section reads it for the note on the paper)."""
    (tmp_path / "config.toml").write_text(load_config("cpu").to_toml())
    return tmp_path


def test_a_common_seed_effect_hides_a_better_loss_from_the_unpaired_rule_not_the_paired_one(
        run_dir):
    """Loss a is 0.06 better than b at every KL. Averaged over the two seeds, a's point lies at
    a higher mean KL than b's, so the old unpaired rule (which needs a KL no higher) calls
    neither dominated; read at the same KL on each seed and paired, a beats b."""
    rows = seed_effect_rows(margin=0.06)
    section = "\n".join(frontier.frontier_section(rows, run_dir)).splitlines()
    verdict = {line.split("**")[1]: line.split("**: ")[1] for line in section
               if line.startswith("- **")}
    assert verdict["a"] == "not dominated"
    # Two seeds leave the interaction 1 df: dominated at one or both common KLs, by a.
    assert "dominated" in verdict["b"] and "not" not in verdict["b"]
    assert verdict["b"].endswith("by a)")


def test_the_paired_difference_recovers_the_margin_and_cancels_the_seed_effect():
    rows = seed_effect_rows(margin=0.06)
    at_kl = frontier.read_losses(frontier.seed_paths(rows), list(TARGETS))
    assert [(x.loss_id, x.target, sorted(x.readings)) for x in at_kl] == [
        ("a", 1.5, [1, 2]), ("a", 2.5, [1, 2]), ("b", 1.5, [1, 2]), ("b", 2.5, [1, 2])]
    found = frontier.claims(at_kl)
    assert len(found) == 4  # 2 ordered pairs x 2 common KLs: the family Holm corrects over
    for claim in (c for c in found if c.better == "a"):
        d = claim.difference
        assert d.mean == pytest.approx(0.06, abs=0.02) and d.n_seeds == 2
        assert "kl" in d.components and d.df is not None
        # The seed effect (0.1 between seeds) is common to both losses: not in the error.
        assert d.stderr < 0.02
    assert any(c.holds for c in found if c.better == "a")
    # Unpaired, the seed effect is in each loss's own standard error.
    levels = {x.loss_id: x.reward_se for x in at_kl if x.target == 2.5}
    assert min(levels.values()) > 0.03
    assert not any(c.holds for c in found if c.better == "b")


def test_losses_equal_at_every_kl_are_rarely_called_dominated():
    """Null simulation: three losses on one curve, three seeds with a common effect on KL and
    reward, a loss-by-seed interaction and prompt noise; Holm over 12 one-sided claims per run.
    Some claim holds in at most 5% of runs, plus twice the simulation's standard error."""
    rng = np.random.default_rng(7)
    runs = 200
    false_claims = 0
    for _ in range(runs):
        prompt_effects = rng.normal(0, 0.1, 12)
        rows = []
        for seed, (effect, kl) in enumerate([(0.04, 3.0), (0.0, 5.0), (-0.04, 7.0)]):
            for loss in ("a", "b", "c"):
                rows.append(row(loss, seed, simulated_metrics(
                    rng, full_kl=kl + rng.normal(0, 0.5), prompt_effects=prompt_effects,
                    offset=effect + rng.normal(0, 0.015), noise=0.04, targets=(2.0, 2.5))))
        at_kl = frontier.read_losses(frontier.seed_paths(rows), [2.0, 2.5])
        false_claims += any(c.holds for c in frontier.claims(at_kl))
    allowed = 0.05 + 2 * math.sqrt(0.05 * 0.95 / runs)
    assert false_claims / runs <= allowed


def test_a_reading_between_two_path_points_is_the_hand_computed_interpolation():
    def path(shift: float) -> list[dict]:
        return [PathPoint(1.0, [0.6 + shift, 0.4 + shift], 8.0, 0.4, 16, [8.0, 8.0]).to_json(),
                PathPoint(0.5, [0.3 + shift, 0.2 + shift], 2.0, 0.2, 16, [2.0, 2.0]).to_json(),
                PathPoint(0.0, [0.1, 0.1], 0.0, 0.0, 16, [0.0, 0.0]).to_json()]

    rows = [row("a", 1, {"reward": 0.5, "kl": 8.0, "kl_targets": [5.0], "path": path(0.0)}),
            row("a", 2, {"reward": 0.6, "kl": 8.0, "kl_targets": [5.0], "path": path(0.1)})]
    [at_five] = frontier.read_losses(frontier.seed_paths(rows), [5.0])
    # KL 5 lies between 2 and 8: weight (8 - 5) / (8 - 2) = 0.5 on the point at KL 2.
    one, two = at_five.readings[1], at_five.readings[2]
    assert one.weight == pytest.approx(0.5)
    assert one.values == pytest.approx([0.5 * 0.3 + 0.5 * 0.6, 0.5 * 0.2 + 0.5 * 0.4])
    assert two.values == pytest.approx([0.55, 0.40])
    assert at_five.reward == pytest.approx((0.45 + 0.30 + 0.55 + 0.40) / 4)
    # The KL noise: slope (0.5 - 0.25) / 6 times the two KL errors weighted 0.5 each.
    slope = (0.5 - 0.25) / 6
    assert one.kl_variance == pytest.approx((slope * (0.5 * 0.2 + 0.5 * 0.4)) ** 2)
    assert one.kl_df == 15
    # Past the path's end there is no reading, so no beta of this loss is read at KL 9.
    assert frontier.read_losses(frontier.seed_paths(rows), [9.0]) == []


def test_the_largest_beta_whose_every_seed_reaches_the_kl_is_read():
    rng = np.random.default_rng(1)
    effects = rng.normal(0, 0.1, PROMPTS)
    rows = [row("a", seed, simulated_metrics(rng, full_kl=kl, offset=0.0, prompt_effects=effects,
                                             targets=(2.0, 4.0)), beta=beta)
            for beta, kls in ((0.25, (2.5, 3.5)), (0.05, (6.0, 8.0)))
            for seed, kl in zip((1, 2), kls, strict=True)]
    at_kl = {x.target: x.beta for x in frontier.read_losses(frontier.seed_paths(rows),
                                                             [2.0, 4.0, 9.0])}
    assert at_kl == {2.0: 0.25, 4.0: 0.05}  # beta 0.25 does not reach 4 on either seed


def test_rows_recorded_before_paths_give_an_unpaired_uncorrected_section(run_dir):
    old = [HeldoutRow("frontier", loss, beta, seed, "done",
                      {"reward": reward + 0.01 * seed, "reward_stderr": 0.01,
                       "kl": kl + 0.1 * seed, "kl_stderr": 0.1, "loss_name": loss})
           for loss, reward, kl in (("dpo", 0.5, 4.0), ("lrml", 0.6, 3.0))
           for beta in (0.05, 0.1) for seed in (1, 2)]
    old.append(HeldoutRow("frontier", "dpo", 0.25, 1, "failed", {"reason": "diverged"}))
    section = "\n".join(frontier.frontier_section(old, run_dir))
    assert "unpaired" in section and "not corrected" in section
    assert "| loss | beta | seeds | reward | KL |" in section
    assert "- **dpo**: dominated (every point, by lrml)" in section
    assert "Failed points (1)" in section
    # Beside rows with paths, they are left out of the paired analysis, and said to be.
    mixed = seed_effect_rows(margin=0.06) + old
    section = "\n".join(frontier.frontier_section(mixed, run_dir))
    assert "8 point(s) recorded before paths were kept are left out" in section
    assert "Holm" in section and "| KL | A - B |" in section
    assert (run_dir / frontier.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_path_record_that_is_not_one_is_left_out_without_a_traceback(run_dir):
    rows = seed_effect_rows(margin=0.06)
    rows[0].metrics["path"] = [{"scale": "x"}]
    assert frontier.row_path(rows[0]) is None
    assert "### Reward-vs-KL frontier" in "\n".join(frontier.frontier_section(rows, run_dir))


def test_the_default_common_kls_are_shares_of_the_runs_budget():
    cpu = load_config("cpu")
    assert frontier.task_options(cpu) == {"kl_budget": 0, "kl_targets": "3,6"}
    assert frontier.task_options(cpu, {"kl_targets": "1.5,3"})["kl_targets"] == "1.5,3"
    smoke = load_config("smoke")  # no budget (a KL weight instead): the fixed grid
    assert frontier.task_options(smoke)["kl_targets"] == "3,6"
    with pytest.raises(UserError, match="kl_targets"):
        frontier.task_options(cpu, {"kl_targets": "3,-1"})


def test_the_sentiment_task_accepts_the_option_and_rejects_a_bad_one():
    task = get_task("sentiment")
    options = frontier.task_options(load_config("cpu"))
    task.check_options("cpu", options)
    assert task.settings(TaskContext(options=options)).kl_targets == "3,6"
    with pytest.raises(UserError, match="kl_targets"):
        task.check_options("cpu", {"kl_targets": "six"})
    with pytest.raises(UserError, match="needs the KL measured"):
        task.check_options("cpu", {"kl_targets": "3", "kl_budget": 0, "measure_kl": False})


def test_the_worker_job_carries_the_option_to_the_tasks_settings(tmp_path, monkeypatch):
    """WorkerTrials writes the job the worker reads: the frontier's options reach
    SentimentSettings through it."""
    import json

    from selfdisco.execution.executors import JOB_FILE
    from selfdisco.execution.records import Job, Result
    from selfdisco.execution.worker import _task_context
    from selfdisco.heldout import Point as HeldoutPoint
    from selfdisco.heldout import session

    config = load_config("cpu")
    task = get_task("sentiment")
    train = task.train_settings("cpu")
    trials = session.WorkerTrials(tmp_path, config, train)
    trials._template = Job(task="sentiment", task_options=dict(config.task.options),
                           task_preset="cpu", task_seed=1, train_seed=0, model_path="m",
                           cache_dir=str(tmp_path), ref_cache_dir="", train_settings=train,
                           server_url="http://x/v1", served_model="m")
    written = []

    def run_job_process(job_dir, timeout):
        written.append(Job.from_dict(json.loads((job_dir / JOB_FILE).read_text())))
        return Result(status="scored", fitness=0.5)

    monkeypatch.setattr(session, "run_job_process", run_job_process)
    trials.evaluate(HeldoutPoint("frontier", "dpo", 0.1, 5), "code",
                    frontier.task_options(config))
    settings = task.settings(_task_context(written[0], None))
    assert settings.kl_targets == "3,6" and settings.kl_budget == 0
    assert written[0].train_seed == 5 and written[0].train_settings.beta == 0.1


def test_run_passes_the_targets_and_records_each_points_path(tmp_path):
    config = load_config("cpu")
    rng = np.random.default_rng(3)
    effects = rng.normal(0, 0.1, PROMPTS)
    recorded, asked = {}, []

    def evaluate(point, code, options):
        from selfdisco.execution.records import Result

        asked.append(options)
        metrics = simulated_metrics(rng, full_kl=7.0, offset=0.0, prompt_effects=effects,
                                    targets=(3.0, 6.0))
        return Result(status="scored", fitness=metrics["reward"], metrics=metrics,
                      timings={"train": 1.0, "score": 2.0})

    ctx = HeldoutContext(run_dir=tmp_path, config=config,
                         losses=[HeldoutLoss("dpo", "dpo", "code")], betas=[0.1], seeds=[1, 2],
                         evaluate=evaluate, policy=lambda: None,
                         record=lambda point, metrics, status="done": recorded.update(
                             {point.seed: (status, metrics)}),
                         done=lambda point: False, emit=lambda *a, **k: None)
    frontier.run(ctx)
    assert asked == [{"kl_budget": 0, "kl_targets": "3,6"}] * 2
    status, metrics = recorded[1]
    assert status == "done" and metrics["kl_targets"] == [3.0, 6.0]
    scales = [PathPoint.from_json(p).scale for p in metrics["path"]]
    assert scales[0] == 1.0 and len(scales) >= 3 and metrics["seconds"] == 3.0

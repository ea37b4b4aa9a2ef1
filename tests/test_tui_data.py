"""The recorded event log the TUI tests replay, how it is made, and that it fits the schema.

tests/data/events_run.jsonl is written by `write_recorded_run` through EventWriter with a
simulated clock: a cpu-preset-like sentiment run (burn-in, two generations of three) with
rejections, a duplicate, a divergence, a failure, a server restart, a pause and a proposer
change. Regenerate it with `python tests/test_tui_data.py` after changing the schema.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from unittest import mock

from selfdisco import events
from selfdisco.events import EVENT_TYPES, STATUSES, EventWriter

DATA = Path(__file__).parent / "data"
RECORDED_RUN = DATA / "events_run.jsonl"
T0 = 1_767_225_600.0  # a fixed start time, so the file is the same every time it is made

DPO = '''def dpo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    return -F.logsigmoid(beta * rho)
'''
HINGE = '''def hinge(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
          reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    return torch.relu(1 - beta * rho)
'''
IPO = '''def ipo(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
        reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    return (rho - 1 / (2 * beta)) ** 2
'''
BLEND = '''def blended_logistic_exp(policy_chosen_logps, policy_rejected_logps,
                         reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    z = beta * rho
    gate = torch.sigmoid(z / 0.05)
    return (1 - gate) * -F.logsigmoid(z) + gate * torch.exp(-z)
'''
IMPORTING = '''def entropy_margin(policy_chosen_logps, policy_rejected_logps,
                   reference_chosen_logps, reference_rejected_logps, beta):
    import numpy as np
    rho = policy_chosen_logps - policy_rejected_logps
    return -F.logsigmoid(beta * rho) + np.log(2)
'''
SCALED_DPO = '''def scaled_sigmoid(policy_chosen_logps, policy_rejected_logps,
                   reference_chosen_logps, reference_rejected_logps, beta):
    chosen = policy_chosen_logps - reference_chosen_logps
    rejected = policy_rejected_logps - reference_rejected_logps
    return F.softplus(-beta * (chosen - rejected))
'''
ADAPTIVE = '''def adaptive_margin_hinge(policy_chosen_logps, policy_rejected_logps,
                          reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    margin = 1.0 + 0.5 * torch.tanh(rho.detach().mean())
    smooth = -F.logsigmoid(beta * rho)
    return 0.7 * smooth + 0.3 * torch.relu(margin - beta * rho)
'''
EXP_RATIO = '''def exponential_ratio(policy_chosen_logps, policy_rejected_logps,
                      reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    return torch.exp(-beta * rho * 20.0)
'''
FOCAL = '''def focal_preference(policy_chosen_logps, policy_rejected_logps,
                     reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    p = torch.sigmoid(beta * rho)
    return -((1 - p) ** 2) * torch.log(p + 1e-8)
'''
PADDED = '''def asymmetric_dpo(policy_chosen_logps, policy_rejected_logps,
                   reference_chosen_logps, reference_rejected_logps, beta):
    rho = (policy_chosen_logps - reference_chosen_logps) - (
        policy_rejected_logps - reference_rejected_logps)
    weight = torch.where(rho < 0, torch.full_like(rho, 0.45), torch.full_like(rho, 0.9))
    return weight * -F.logsigmoid(beta * rho)
'''


class Clock:
    """Simulated time for EventWriter: advance() moves it on."""

    def __init__(self, start: float):
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _train(emit, clock: Clock, key: str, steps: int, start_loss: float, *,
           diverge_at: int | None = None) -> None:
    emit("candidate_status", id=key, status="training")
    for step in range(1, steps + 1):
        clock.advance(3.3)
        if diverge_at is not None and step == diverge_at:
            emit("candidate_diverged", id=key, step=step,
                 reason=f"loss became inf at step {step}")
            return
        loss = start_loss * (0.97 ** step) if diverge_at is None else start_loss * 1.6 ** step
        emit("training_progress", id=key, step=step, total=steps, loss=round(loss, 5))


def _score(emit, clock: Clock, key: str, reward: float, stderr: float, kl: float) -> None:
    emit("candidate_status", id=key, status="scoring")
    clock.advance(21.0)
    emit("candidate_scored", id=key, fitness=reward, stderr=stderr,
         metrics={"reward": reward, "reward_std": round(stderr * 8, 4), "kl": kl,
                  "mean_length": 38.2, "n": 64})


def write_recorded_run(run_dir: Path) -> None:
    """Write the recorded run's events.jsonl into run_dir."""
    clock = Clock(T0)
    with mock.patch.object(events, "time", types.SimpleNamespace(time=clock.time)):
        writer = EventWriter(run_dir)

        def emit(kind: str, **fields) -> None:
            writer.emit(kind, **fields)
            clock.advance(0.2)

        emit("server", state="starting", detail="vLLM on port 8011: smollm2-135m-instruct")
        clock.advance(31.0)
        emit("server", state="ready", detail="started in 31 s")
        emit("run_started", run_id="demo-sentiment-cpu", task="sentiment", preset="cpu",
             proposer="base", generations=2, candidates_per_generation=3)

        # Burn-in: the base policy and the catalog's baselines, measured on this task.
        emit("generation_started", generation=0)
        emit("stage", generation=0, stage="burn-in", state="started", detail="3 losses + base")
        emit("candidate_proposed", id="g0-base", generation=0, name="base",
             thought="The reference policy before any training.", code="", proposer="catalog",
             attempt=0)
        _score(emit, clock, "g0-base", 0.1412, 0.0301, 0.0)
        for key, name, code, thought, reward, kl in (
            ("g0-dpo", "dpo", DPO, "Direct Preference Optimization: f(z) = -log sigmoid(z).",
             0.2265, 0.412),
            ("g0-hinge", "hinge", HINGE, "SLiC: a hinge on the scaled log-ratio difference.",
             0.2190, 0.388),
            ("g0-ipo", "ipo", IPO, "IPO: squared distance of rho from 1/(2 beta).",
             0.1874, 0.254),
        ):
            emit("candidate_proposed", id=key, generation=0, name=name, thought=thought,
                 code=code, proposer="catalog", attempt=0)
            _train(emit, clock, key, 12, 0.6931)
            _score(emit, clock, key, reward, 0.0287, kl)
        emit("stage", generation=0, stage="burn-in", state="finished", detail="4 scored")
        emit("generation_finished", generation=0, best_id="g0-dpo", best_fitness=0.2265)

        # Generation 1: a rejection and its resample, a duplicate, a divergence.
        emit("generation_started", generation=1)
        emit("stage", generation=1, stage="propose", state="started", detail="3 candidates")
        clock.advance(14.0)
        emit("candidate_proposed", id="g1-c1", generation=1, name="entropy_margin",
             thought="Add a constant entropy bonus so the policy keeps exploring.",
             code=IMPORTING, proposer="base", attempt=0)
        emit("candidate_rejected", id="g1-c1", stage="static",
             reason="line 2: 'import' is not allowed; use torch, F and math only")
        clock.advance(9.0)
        emit("candidate_proposed", id="g1-c1a1", generation=1, name="blended_logistic_exp",
             thought="Blend the logistic loss with an exponential one, gated by a sharp "
                     "sigmoid of the margin: logistic for losing pairs, exponential for "
                     "winning ones.",
             code=BLEND, proposer="base", attempt=1)
        clock.advance(8.5)
        emit("candidate_proposed", id="g1-c2", generation=1, name="scaled_sigmoid",
             thought="A softplus of the negative margin should be smoother than DPO.",
             code=SCALED_DPO, proposer="base", attempt=0)
        emit("candidate_rejected", id="g1-c2", stage="duplicate",
             reason="behaves like g0-dpo (fingerprint distance 0.0000); propose something "
                    "different")
        clock.advance(10.0)
        emit("candidate_proposed", id="g1-c2a1", generation=1, name="exponential_ratio",
             thought="Push hard on the ratio with an exponential of a scaled margin.",
             code=EXP_RATIO, proposer="base", attempt=1)
        clock.advance(11.0)
        emit("candidate_proposed", id="g1-c3", generation=1, name="adaptive_margin_hinge",
             thought="Mix a smooth logistic term with a hinge whose margin adapts to the "
                     "batch's mean log-ratio, so easy batches ask for more.",
             code=ADAPTIVE, proposer="base", attempt=0)
        emit("log", level="warning",
             message="proposer answer for slot 3 was cut at max_tokens; it still parsed")
        emit("stage", generation=1, stage="propose", state="finished", detail="3 valid")
        emit("stage", generation=1, stage="evaluate", state="started", detail="3 candidates")
        _train(emit, clock, "g1-c1a1", 12, 0.8466)
        _score(emit, clock, "g1-c1a1", 0.2411, 0.0295, 0.463)
        _train(emit, clock, "g1-c2a1", 12, 1.0, diverge_at=5)
        emit("server", state="restarting", detail="health check failed: connection refused")
        clock.advance(29.0)
        emit("server", state="ready", detail="restarted in 29 s")
        _train(emit, clock, "g1-c3", 12, 0.9125)
        _score(emit, clock, "g1-c3", 0.2528, 0.0281, 0.497)
        emit("stage", generation=1, stage="evaluate", state="finished",
             detail="2 scored, 1 diverged")
        emit("generation_finished", generation=1, best_id="g1-c3", best_fitness=0.2528)
        emit("proposer_changed", proposer="g1-c3", adapter="candidates/g1-c3/adapter",
             fitness=0.2528)

        # Generation 2: proposed by g1-c3's policy; a pause, a failure.
        emit("generation_started", generation=2)
        emit("stage", generation=2, stage="propose", state="started", detail="3 candidates")
        clock.advance(16.0)
        emit("candidate_proposed", id="g2-c1", generation=2, name="focal_preference",
             thought="Focal weighting: down-weight pairs the policy already ranks correctly.",
             code=FOCAL, proposer="g1-c3", attempt=0)
        clock.advance(12.0)
        emit("candidate_proposed", id="g2-c2", generation=2, name="asymmetric_dpo",
             thought="Halve the weight on pairs with negative margin, like PADLL.",
             code=PADDED, proposer="g1-c3", attempt=0)
        clock.advance(12.0)
        emit("candidate_proposed", id="g2-c3", generation=2, name="adaptive_margin_hinge_v2",
             thought="Same adaptive hinge with a larger logistic share.",
             code=ADAPTIVE.replace("0.7 *", "0.8 *").replace("0.3 *", "0.2 *"),
             proposer="g1-c3", attempt=0)
        emit("stage", generation=2, stage="propose", state="finished", detail="3 valid")
        emit("control", command="pause")
        clock.advance(40.0)
        emit("control", command="resume")
        emit("stage", generation=2, stage="evaluate", state="started", detail="3 candidates")
        _train(emit, clock, "g2-c1", 12, 0.7012)
        _score(emit, clock, "g2-c1", 0.2375, 0.0290, 0.441)
        emit("candidate_status", id="g2-c2", status="training")
        clock.advance(19.0)
        emit("candidate_failed", id="g2-c2",
             reason="worker exited with signal 9 (out of memory?) after 19 s")
        _train(emit, clock, "g2-c3", 12, 0.8890)
        _score(emit, clock, "g2-c3", 0.2603, 0.0284, 0.512)
        emit("stage", generation=2, stage="evaluate", state="finished",
             detail="2 scored, 1 failed")
        emit("generation_finished", generation=2, best_id="g2-c3", best_fitness=0.2603)
        emit("proposer_changed", proposer="g2-c3", adapter="candidates/g2-c3/adapter",
             fitness=0.2603)
        emit("run_finished", reason="generation limit reached", best_id="g2-c3",
             best_fitness=0.2603)
        emit("server", state="stopped", detail="")


def recorded_lines() -> list[str]:
    return RECORDED_RUN.read_text().splitlines(keepends=True)


def test_recorded_run_is_what_the_generator_writes(tmp_path):
    write_recorded_run(tmp_path)
    assert (tmp_path / "events.jsonl").read_text() == RECORDED_RUN.read_text()


def test_recorded_events_carry_exactly_their_schema_fields():
    seen = set()
    for line in recorded_lines():
        event = json.loads(line)
        fields = set(event) - {"v", "seq", "t", "type"}
        assert fields == set(EVENT_TYPES[event["type"]]), event
        if event["type"] == "candidate_status":
            assert event["status"] in STATUSES
        seen.add(event["type"])
    # The log exercises every event type but a resume.
    assert set(EVENT_TYPES) - seen == {"run_resumed"}


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    (target / "events.jsonl").unlink(missing_ok=True)
    write_recorded_run(target)
    (target / "events.jsonl").replace(target / RECORDED_RUN.name)
    print(f"wrote {target / RECORDED_RUN.name}")

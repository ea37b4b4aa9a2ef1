"""The recorded event log the TUI tests replay, how it is made, and that it fits the schema.

tests/data/events_run.jsonl is written by `write_recorded_run` through EventWriter with a
simulated clock, in the order and with the ids selfdisco.discovery.loop uses: a
cpu-preset-like sentiment run (burn-in, two generations of three) with rejections, a
duplicate, a divergence, a killed worker, a server restart, a pause and a proposer change.
Regenerate it with `python tests/tui/test_tui_data.py` after changing the schema.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from unittest import mock

from selfdisco.rundir import events
from selfdisco.rundir.events import EVENT_TYPES, EventWriter, check_event

DATA = Path(__file__).resolve().parents[1] / "data"  # tests/data
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


class Recorder:
    """Emits events in the order selfdisco.discovery.loop does, with simulated durations."""

    def __init__(self, writer: EventWriter, clock: Clock):
        self.writer, self.clock = writer, clock

    def emit(self, kind: str, **fields) -> None:
        self.writer.emit(kind, **fields)
        self.clock.advance(0.2)

    def propose(self, key: str, generation: int, name: str, thought: str, code: str,
                proposer: str, attempt: int = 0, think_s: float = 11.0) -> None:
        self.clock.advance(think_s)
        self.emit("candidate_proposed", id=key, generation=generation, name=name,
                  thought=thought, code=code, proposer=proposer, attempt=attempt)

    def evaluate(self, plans: list[tuple]) -> None:
        """plans: (id, outcome, args); every row is marked first, then evaluated in turn."""
        for key, outcome, _ in plans:
            self.emit("candidate_status", id=key, status="scoring" if outcome == "base"
                      else "training")
        for key, outcome, args in plans:
            getattr(self, f"_{outcome}")(key, *args)

    def _train(self, key: str, steps: int, start_loss: float, diverge_at: int | None = None,
               die_at: int | None = None) -> bool:
        for step in range(1, steps + 1):
            self.clock.advance(3.3)
            if step == diverge_at:
                self.emit("candidate_diverged", id=key, step=step,
                          reason=f"diverged at step {step}: loss is inf")
                return False
            if step == die_at:
                self.emit("candidate_failed", id=key,
                          reason="the evaluation process died (killed by signal 9) without a "
                                 "result; see worker.log")
                return False
            if step == steps:
                self.emit("candidate_status", id=key, status="scoring")
            growth = 1.6 if diverge_at else 0.97
            self.emit("training_progress", id=key, step=step, total=steps,
                      loss=round(start_loss * growth ** step, 5))
        return True

    def _score(self, key: str, reward: float, stderr: float, kl: float, train: dict) -> None:
        self.clock.advance(21.0)
        metrics = {"scorer": "vader", "prompts": 16, "samples_per_prompt": 4,
                   "mean_tokens": 38.2, "sampling_seconds": 14.1, "seconds": 20.6,
                   "kl": kl, "kl_stderr": round(kl / 9, 4), "kl_samples": 64, "n": 16}
        if train:
            metrics["policy"] = f"candidates/{key}/adapter"
            metrics["train"] = train
            metrics["adapter"] = f"candidates/{key}/adapter"
        else:
            metrics["policy"] = "base model (the reference)"
        self.emit("candidate_scored", id=key, fitness=reward, stderr=stderr, metrics=metrics)

    def _base(self, key: str, reward: float) -> None:
        self._score(key, reward, 0.0301, 0.0, {})

    def _scored(self, key: str, start_loss: float, reward: float, kl: float) -> None:
        self._train(key, 12, start_loss)
        train = {"train_loss": round(start_loss * 0.97 ** 12, 4), "seconds_per_step": 3.3,
                 "peak_rss_mb": 2011.5, "steps": 12}
        self._score(key, reward, round(0.028 + reward / 100, 4), kl, train)

    def _diverged(self, key: str, at: int) -> None:
        self._train(key, 12, 1.0, diverge_at=at)

    def _died(self, key: str, at: int) -> None:
        self._train(key, 12, 0.7, die_at=at)


def write_recorded_run(run_dir: Path) -> None:
    """Write the recorded run's events.jsonl into run_dir."""
    clock = Clock(T0)
    with mock.patch.object(events, "time", types.SimpleNamespace(time=clock.time)):
        run = Recorder(EventWriter(run_dir), clock)
        emit = run.emit
        emit("run_started", run_id="demo-sentiment-cpu", task="sentiment", preset="cpu",
             proposer="local", generations=2, candidates_per_generation=3, notes=[])
        emit("server", state="starting", detail="vLLM for smollm2-135m-instruct")
        clock.advance(31.0)
        emit("server", state="started", detail="http://127.0.0.1:8011/v1 in 31 s")
        emit("stage", generation=0, stage="data", state="start", detail="preference pairs")
        clock.advance(48.0)
        emit("stage", generation=0, stage="data", state="end", detail="64 pairs")

        # Burn-in: the untrained policy and the catalog's baselines, measured on this task.
        emit("candidate_proposed", id="base", generation=0, name="base (untrained policy)",
             thought="", code="", proposer="catalog", attempt=0)
        for key, name, code, thought in (
            ("burn-dpo", "dpo", DPO, "Direct Preference Optimization"),
            ("burn-hinge", "hinge", HINGE, "SLiC: hinge on the scaled log-ratio difference"),
            ("burn-ipo", "ipo", IPO, "Identity Preference Optimization"),
        ):
            emit("candidate_proposed", id=key, generation=0, name=name, thought=thought,
                 code=code, proposer="catalog", attempt=0)
        emit("stage", generation=0, stage="burn_in", state="start", detail="4 to evaluate")
        run.evaluate([("base", "base", (0.1412,)),
                      ("burn-dpo", "scored", (0.6931, 0.2265, 0.412)),
                      ("burn-hinge", "scored", (1.0, 0.2190, 0.388)),
                      ("burn-ipo", "scored", (100.0, 0.1874, 0.254))])
        emit("stage", generation=0, stage="burn_in", state="end", detail="")

        # Generation 1: a rejection and its resample, a duplicate, a divergence.
        emit("generation_started", generation=1)
        emit("stage", generation=1, stage="propose", state="start", detail="proposer: base")
        run.propose("g01-c1", 1, "entropy_margin",
                    "Add a constant entropy bonus so the policy keeps exploring.", IMPORTING,
                    "base", think_s=14.0)
        emit("candidate_rejected", id="g01-c1", stage="screen",
             reason="line 2: 'import' is not allowed; use torch, F and math only")
        run.propose("g01-c1-r1", 1, "blended_logistic_exp",
                    "Blend the logistic loss with an exponential one, gated by a sharp sigmoid "
                    "of the margin: logistic for losing pairs, exponential for winning ones.",
                    BLEND, "base", attempt=1, think_s=9.0)
        run.propose("g01-c2", 1, "scaled_sigmoid",
                    "A softplus of the negative margin should be smoother than DPO.",
                    SCALED_DPO, "base", think_s=8.5)
        emit("candidate_rejected", id="g01-c2", stage="duplicate",
             reason="it behaves the same as dpo (burn-dpo), which was already evaluated; "
                    "propose a loss with a different shape")
        run.propose("g01-c2-r1", 1, "exponential_ratio",
                    "Push hard on the ratio with an exponential of a scaled margin.",
                    EXP_RATIO, "base", attempt=1, think_s=10.0)
        run.propose("g01-c3", 1, "adaptive_margin_hinge",
                    "Mix a smooth logistic term with a hinge whose margin adapts to the batch's "
                    "mean log-ratio, so easy batches ask for more.", ADAPTIVE, "base")
        emit("log", level="warning",
             message="proposer answer for g01-c3 was cut at max_tokens; it still parsed")
        emit("stage", generation=1, stage="propose", state="end", detail="")
        emit("stage", generation=1, stage="evaluate", state="start", detail="3 candidates")
        run.evaluate([("g01-c1-r1", "scored", (0.8466, 0.2411, 0.463)),
                      ("g01-c2-r1", "diverged", (5,))])
        emit("log", level="warning", message="the model server failed during g01-c3 and was "
             "restarted; evaluating again")
        emit("server", state="restarted", detail="after a crash")
        clock.advance(29.0)
        run.evaluate([("g01-c3", "scored", (0.9125, 0.2528, 0.497))])
        emit("stage", generation=1, stage="evaluate", state="end", detail="")
        emit("proposer_changed", proposer="g01-c3", adapter="candidates/g01-c3/adapter",
             fitness=0.2528)
        emit("generation_finished", generation=1, best_id="g01-c3", best_fitness=0.2528)

        # Generation 2: proposed by g01-c3's policy; a pause, a worker killed.
        emit("generation_started", generation=2)
        emit("stage", generation=2, stage="propose", state="start", detail="proposer: g01-c3")
        run.propose("g02-c1", 2, "focal_preference",
                    "Focal weighting: down-weight pairs the policy already ranks correctly.",
                    FOCAL, "g01-c3", think_s=16.0)
        run.propose("g02-c2", 2, "asymmetric_dpo",
                    "Halve the weight on pairs with negative margin, like PADLL.", PADDED,
                    "g01-c3", think_s=12.0)
        run.propose("g02-c3", 2, "adaptive_margin_hinge_v2",
                    "Same adaptive hinge with a larger logistic share.",
                    ADAPTIVE.replace("0.7 *", "0.8 *").replace("0.3 *", "0.2 *"), "g01-c3",
                    think_s=12.0)
        emit("stage", generation=2, stage="propose", state="end", detail="")
        emit("control", command="pause")
        clock.advance(40.0)
        emit("control", command="resume")
        emit("stage", generation=2, stage="evaluate", state="start", detail="3 candidates")
        run.evaluate([("g02-c1", "scored", (0.7012, 0.2375, 0.441)),
                      ("g02-c2", "died", (6,)),
                      ("g02-c3", "scored", (0.8890, 0.2603, 0.512))])
        emit("stage", generation=2, stage="evaluate", state="end", detail="")
        emit("proposer_changed", proposer="g02-c3", adapter="candidates/g02-c3/adapter",
             fitness=0.2603)
        emit("generation_finished", generation=2, best_id="g02-c3", best_fitness=0.2603)
        emit("run_finished", reason="generation limit reached", stopped=False, best_id="g02-c3",
             best_fitness=0.2603)
        emit("server", state="stopped", detail="")


def recorded_lines() -> list[str]:
    return RECORDED_RUN.read_text().splitlines(keepends=True)


def test_recorded_run_is_what_the_generator_writes(tmp_path):
    write_recorded_run(tmp_path)
    assert (tmp_path / "events.jsonl").read_text() == RECORDED_RUN.read_text()


def test_recorded_events_fit_the_schema():
    seen = set()
    for line in recorded_lines():
        event = json.loads(line)
        check_event(event)
        seen.add(event["type"])
    # The log exercises every event type but a resume, the held-out evaluation's, the
    # proposer duel (tests/tui/test_proposers.py has it) and the multi-fidelity stage
    # (tests/discovery/search/test_fidelity.py).
    assert {t for t in set(EVENT_TYPES) - seen if not t.startswith("heldout_")} == {
        "run_resumed", "proposer_duel", "candidate_stage"}


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DATA
    (target / "events.jsonl").unlink(missing_ok=True)
    write_recorded_run(target)
    (target / "events.jsonl").replace(target / RECORDED_RUN.name)
    print(f"wrote {target / RECORDED_RUN.name}")

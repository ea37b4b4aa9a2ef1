"""Pieces for driving the discovery loop in tests without a model server.

ScriptedProposer is a real BaseClient (so its exchanges are recorded and replayable) whose
answers come from a list. CurveEvaluator scores a loss by a cheap, deterministic property of
its curve (computed by running the candidate's code), so the loop's decisions can be checked;
PromptCurveEvaluator adds per-prompt scores, which a policy needs to challenge the proposer.
make_digits_loop drives the same loop on the digits task (classification losses, a real and
cheap evaluator: the digits_evaluator fixture in conftest.py), with digits_answer's answers.
"""

from __future__ import annotations

import json
import threading
import zlib
from dataclasses import replace
from pathlib import Path

from selfdisco.config import load_config
from selfdisco.discovery.interface import Services
from selfdisco.discovery.loop import Discovery
from selfdisco.execution.records import Result
from selfdisco.launch.digits import classification_services
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import BaseClient
from selfdisco.llm.protocol import Completion
from selfdisco.losses import screen
from selfdisco.losses.catalog import catalog_entry
from selfdisco.losses.parse import parse_answer
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import EventWriter
from selfdisco.tasks import get_task

DPO_LIKE = ("def loss_fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
            "reference_rejected_logps, beta):\n"
            "    rho = (policy_chosen_logps - policy_rejected_logps) - "
            "(reference_chosen_logps - reference_rejected_logps)\n"
            "    x = beta * rho\n"
            "    return {expr}\n")


def answer(name: str, expr: str, thought: str = "a mix of shapes") -> str:
    return json.dumps({"thought": thought, "name": name, "code": DPO_LIKE.format(expr=expr)})


# Five distinct new losses: a challenger that writes these in a duel of 5 answers a side
# against one that writes nothing usable wins (exact p = 1/32, duel.py).
DUEL_WINS = [answer(f"duel_{i}", expr) for i, expr in enumerate([
    "1.0 * torch.sigmoid(-0.7 * x)", "1.0 * torch.square(torch.relu(1.0 - 1.5 * x))",
    "0.2 * torch.exp(-0.5 * x) + 0.8 * torch.sigmoid(-2.5 * x)",
    "0.9 * F.softplus(-0.5 * x) + 0.1 * torch.abs(1.0 - x)",
    "0.4 * torch.exp(-3.0 * x) + 0.6 * torch.relu(2.0 - x)"])]


class ScriptedProposer(BaseClient):
    def __init__(self, answers: list[str], recorder: Recorder | None = None,
                 down_after: int | None = None):
        self.answers = list(answers)
        self.down_after = down_after  # requests answered before the server "goes down"
        self.recorder = recorder
        self.model = "scripted"
        self.requests: list[dict] = []
        self.adapters: dict[str, str] = {}
        self.lock = threading.Lock()

    def _answer(self, request: dict) -> list[Completion]:
        from selfdisco.llm.client import LLMUnavailable

        with self.lock:  # the loop sends a round of resamples from several threads
            if self.down_after is not None and len(self.requests) >= self.down_after:
                raise LLMUnavailable("no answer from the LLM server after 4 tries")
            self.requests.append(request)
            texts = [self.answers.pop(0) if self.answers else ""
                     for _ in range(request.get("n", 1))]
        return [Completion(text=text, finish_reason="stop") for text in texts]

    def load_adapter(self, name: str, path: str) -> None:
        self.adapters[name] = path

    def unload_adapter(self, name: str) -> None:
        self.adapters.pop(name, None)


class CurveEvaluator:
    """fitness = loss(rho=-5) - loss(rho=+5) at beta 1: how strongly a loss prefers winners."""

    def __init__(self):
        self.evaluated: list[str] = []

    def evaluate(self, rows, on_progress, on_done, on_start=None, replicates=None) -> None:
        """`replicates` (row id -> training seeds) as WorkerEvaluator takes it; the curve has
        no seed noise, so every seed scores alike."""
        for row in rows:
            for k in replicates.get(row.id, [0]) if replicates else [None]:
                result = self._evaluate(row, on_progress, on_start)
                on_done(row, result if k is None else replace(result, replicate=k))

    def _evaluate(self, row, on_progress, on_start) -> Result:
        import torch

        from selfdisco.losses import compile_loss

        if on_start:
            on_start(row)
        self.evaluated.append(row.id)
        if row.code is None:
            return Result(status="scored", fitness=0.0, stderr=0.01, metrics={"kl": 0.0})
        on_progress(row, {"step": 1, "total": 2, "loss": 0.5})
        fn = compile_loss(row.code)
        rho = torch.tensor([-5.0, 5.0])
        zero = torch.zeros(2)
        losses = fn(rho, zero, zero, zero, 1.0)
        if not torch.isfinite(losses).all():
            return Result.failed("diverged", "diverged at step 1", step=1)
        on_progress(row, {"step": 2, "total": 2, "loss": 0.4})
        fitness = float(losses[0] - losses[1])
        return Result(status="scored", fitness=fitness, stderr=0.01, metrics={"kl": 0.1},
                      adapter=f"/adapters/{row.id}")


class PromptCurveEvaluator(CurveEvaluator):
    """CurveEvaluator with per-prompt scores: the fitness plus offsets of mean 0 that differ by
    loss. Comparing two policies then measures its prompt part; CurveEvaluator's comparisons
    leave it out and make no claim, so under them no policy challenges the proposer."""

    def _evaluate(self, row, on_progress, on_start) -> Result:
        import numpy as np

        result = super()._evaluate(row, on_progress, on_start)
        if result.status != "scored":
            return result
        offsets = np.random.default_rng(zlib.crc32(row.id.encode())).normal(0, 0.01, 8)
        per_prompt = [result.fitness + float(o) for o in offsets - offsets.mean()]
        return replace(result, metrics={**result.metrics, "per_prompt": per_prompt})


def make_loop(run_dir: Path, proposer, evaluator, **discovery) -> Discovery:
    overrides = {"discovery": {"generations": 2, "candidates_per_generation": 2,
                               "burn_in": ["dpo", "hinge"], "max_resamples": 2,
                               **discovery}}
    config = load_config("smoke", overrides=overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    services = Services(proposer=proposer, evaluator=evaluator, screen=screen, parse=parse_answer,
                        catalog=catalog_entry, adapters=proposer,
                        task_description="a test fitness", beta=0.05)
    return Discovery(config, run_dir, Archive(run_dir), EventWriter(run_dir), services)


DIGITS = {"task": {"name": "digits", "options": {"epochs": 2}},
          "discovery": {"burn_in": ["cross_entropy", "focal"], "code_grammar": "free",
                        "self_improve": "off", "generations": 1,
                        "candidates_per_generation": 2, "max_resamples": 1}}
DIGITS_CODES = {  # four classification losses whose accuracies differ
    "tempered": "    return F.cross_entropy(logits / 2.0, targets, reduction='none')\n",
    "sharp": "    return F.cross_entropy(logits * 3.0, targets, reduction='none')\n",
    "smoothed": "    return F.cross_entropy(logits, targets, reduction='none', "
                "label_smoothing=0.3)\n",
    "squared": "    p = F.softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)\n"
               "    return (1 - p) ** 2\n",
}


def digits_answer(name: str, code: str) -> str:
    return json.dumps({"thought": "try it", "name": name, "code": code})


DIGITS_ANSWERS = [digits_answer(name, f"def {name}(logits, targets):\n{body}")
                  for name, body in DIGITS_CODES.items()]


def digits_config(**discovery):
    overrides = json.loads(json.dumps(DIGITS))
    overrides["discovery"].update(discovery)
    return load_config("cpu", overrides=overrides)


def make_digits_loop(run_dir: Path, proposer, evaluator, **discovery) -> Discovery:
    config = digits_config(**discovery)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    description = f"Fitness here is the {get_task('digits').description}; higher is better."
    services = classification_services(proposer, evaluator, description)  # as the runner's
    return Discovery(config, run_dir, Archive(run_dir), EventWriter(run_dir), services)

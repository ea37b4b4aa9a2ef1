"""Proposer self-training (discovery.self_improve = "proposals"): preference pairs from the
proposer's own answers in this run, and a proposer LoRA trained on them under the best loss the
run has found (dpo until a candidate beats dpo beyond noise). The adapter is the duel's challenger.

Pairs share a context: a generation's first answers (attempt 0) to the same messages (all of
them, or an island's: selfdisco/discovery/search/population.py), each side of a duel and each
round of practice (answers the current proposer gives to the next generation's context before
each training, screened only, to have pairs from the start).
Chosen: a valid and novel answer; rejected: one that failed parsing, screening or
de-duplication, whose training failed, or that scored lower by more than 2 standard errors of
the difference. Everything is kept under <run>/proposer/: contexts/ (the messages
answered), gNN/practice.json, gNN/pairs.jsonl, gNN/job.json (loss, seed, settings),
gNN/result.json and gNN/adapter/.
Run as `python -m selfdisco.discovery.proposer.selftrain JOB.json` to train one adapter (the
loop does, in a child process); a replayed run reuses the recorded run's adapters instead
(RecordedTrainer).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.config import read_run_config
from selfdisco.errors import one_line
from selfdisco.formatting import format_fitness
from selfdisco.llm.models import resolve_model
from selfdisco.llm.topology import parse_source
from selfdisco.losses import Candidate
from selfdisco.rundir.events import PROPOSED, REJECTED, SCORED, UNSCORED
from selfdisco.rundir.paths import write_text_atomic
from selfdisco.stats import TIE_SE
from selfdisco.tasks import run_train_settings

PROPOSER_DIR = "proposer"
RESULT_FILE = "result.json"
BAD = UNSCORED  # answers that are never chosen
# A proposer's prompt is long (system prompt and history) and its answer a few hundred tokens:
# the end of the prompt and the whole answer are kept.
LENGTHS = {"max_length": 1536, "max_prompt_length": 1152, "batch_size": 2, "grad_accum": 1}


@dataclass
class Answer:
    """One answer to a context and what became of it."""

    id: str
    text: str
    status: str  # a candidate status; duel answers are PROPOSED (valid) or REJECTED
    stage: str | None = None
    fitness: float | None = None
    stderr: float | None = None


@dataclass
class Pair:
    prompt: list[dict]
    chosen: Answer
    rejected: Answer
    why: str

    def to_json(self) -> dict[str, Any]:
        """A conversational preference row (selfdisco/train/data.py) with its provenance."""
        return {"prompt": self.prompt,
                "chosen": [{"role": "assistant", "content": self.chosen.text}],
                "rejected": [{"role": "assistant", "content": self.rejected.text}],
                "chosen_id": self.chosen.id, "rejected_id": self.rejected.id, "why": self.why}


def proposer_dir(run_dir: Path) -> Path:
    return Path(run_dir) / PROPOSER_DIR


def save_context(run_dir: Path, name: str, messages: list[dict] | dict[int, list[dict]]) -> None:
    """Keep the messages a set of answers replied to: per slot for a generation (gNN), one list
    for a duel or a round of practice (duel-gNN, practice-gNN)."""
    path = proposer_dir(run_dir) / "contexts" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(messages))


def load_context(run_dir: Path, name: str) -> Any:
    path = proposer_dir(run_dir) / "contexts" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _why_worse(chosen: Answer, other: Answer) -> str | None:
    """Why `other` is the rejected answer beside `chosen`, or None if it is not."""
    if other.status == REJECTED:
        return f"rejected at {other.stage or 'screening'}"
    if other.status in BAD:
        return f"training {other.status}"
    if chosen.status == other.status == SCORED and None not in (chosen.fitness, other.fitness):
        margin = TIE_SE * math.sqrt((chosen.stderr or 0.0) ** 2 + (other.stderr or 0.0) ** 2)
        if chosen.fitness - other.fitness > margin:
            return (f"scored lower ({format_fitness(other.fitness)} vs "
                    f"{format_fitness(chosen.fitness)})")
    return None


def pairs_from(prompt: list[dict], answers: list[Answer]) -> list[Pair]:
    """Every (chosen, rejected) pair among answers to the same prompt."""
    pairs = []
    for chosen in answers:
        if chosen.status in BAD or not chosen.text.strip():
            continue
        for other in answers:
            why = _why_worse(chosen, other)
            if why and other.text.strip() and other.text != chosen.text:
                pairs.append(Pair(prompt, chosen, other, why))
    return pairs


def save_practice(run_dir: Path, g: int, answers: list[str], outcomes: list[str],
                  seed: int | None = None) -> None:
    """Keep a round of practice answers and their sampling seed (the context they answered is
    saved as practice-gNN)."""
    write_text_atomic(proposer_dir(run_dir) / f"g{g:02d}" / "practice.json",
                      json.dumps({"seed": seed, "answers": answers, "outcomes": outcomes}))


def _screened(prefix: str, texts: list[str], outcomes: list[str]) -> list[Answer]:
    """Answers screened only (duel, practice): valid ones are PROPOSED, others REJECTED."""
    return [Answer(f"{prefix}-{i}", text, PROPOSED if outcome == "valid" else REJECTED,
                   None if outcome == "valid" else outcome)
            for i, (text, outcome) in enumerate(zip(texts, outcomes, strict=True))]


def build_pairs(run_dir: Path, rows: list, duels: dict[int, dict]) -> list[Pair]:
    """The pairs of a run so far: from each generation's first answers, each duel's and each
    round of practice."""
    pairs = []
    for g in sorted({r.generation for r in rows if r.kind == "proposal"}):
        contexts = load_context(run_dir, f"g{g:02d}") or {}
        groups: dict[str, list[Answer]] = {}
        for r in rows:
            if r.kind == "proposal" and r.generation == g and not r.attempt \
                    and str(r.slot) in contexts:
                groups.setdefault(json.dumps(contexts[str(r.slot)]), []).append(
                    Answer(r.id, r.raw_text or "", r.status, r.stage, r.fitness, r.stderr))
        for prompt, answers in groups.items():
            pairs += pairs_from(json.loads(prompt), answers)
    for g, record in sorted(duels.items()):
        prompt = load_context(run_dir, f"duel-g{g:02d}")
        if prompt is None:
            continue
        answers = [a for side in ("current", "challenger") for a in _screened(
            f"duel-g{g:02d}-{side}", record[f"{side}_answers"], record[f"{side}_outcomes"])]
        pairs += pairs_from(prompt, answers)
    for path in sorted(proposer_dir(run_dir).glob("g*/practice.json")):
        name = path.parent.name
        prompt = load_context(run_dir, f"practice-{name}")
        practice = json.loads(path.read_text())
        if prompt is not None:
            pairs += pairs_from(prompt, _screened(f"practice-{name}", practice["answers"],
                                                  practice["outcomes"]))
    return pairs


def best_loss(rows: list, catalog) -> dict:
    """The loss to train the proposer under: the fittest proposal better than dpo after the
    correction for the run's number of comparisons (stats.BETTER_RULE), else dpo. Returns name,
    code and why."""
    comparison = stats.compare([r for r in rows if r.status == SCORED])
    beating = [r for r in rows if comparison is not None and r.id in comparison.better
               and r.kind == "proposal" and r.code]
    if not beating:
        return {"name": "dpo", "code": catalog("dpo")["code"],
                "why": f"no candidate is better than dpo at a family-wise level of "
                       f"{stats.FAMILY_ALPHA:g} yet"}
    best = max(beating, key=lambda r: r.fitness)
    d = comparison.to_reference[best.id]
    return {"name": best.name, "code": best.code, "id": best.id,
            "why": f"{best.id} is better than dpo by {format_fitness(d.mean, d.stderr)} "
                   f"(Holm over {len(comparison.to_reference)} comparisons)"}


def write_pairs(path: Path, pairs: list[Pair]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(p.to_json()) + "\n" for p in pairs))


@dataclass
class Trained:
    """A proposer adapter's training outcome (gNN/result.json)."""

    ok: bool
    adapter: str | None
    reason: str

    @classmethod
    def read(cls, path: Path) -> Trained | None:
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(bool(data["ok"]), data.get("adapter"), str(data.get("reason", "")))


class ProposerTrainer:
    """Trains a proposer adapter in a child process (`python -m
    selfdisco.discovery.proposer.selftrain JOB.json`); a result already in the run directory (a
    resumed run) is reused."""

    def __init__(self, run_dir: Path, timeout_s: float) -> None:
        self.run_dir = Path(run_dir)
        self.timeout_s = timeout_s

    def train(self, name: str, pairs_path: Path, loss: dict, seed: int, steps: int) -> Trained:
        out = proposer_dir(self.run_dir) / name
        done = Trained.read(out / RESULT_FILE)
        if done is not None:
            return done
        job = out / "job.json"
        write_text_atomic(job, json.dumps({"run_dir": str(self.run_dir), "pairs": str(pairs_path),
                                           "loss": loss, "seed": seed, "steps": steps,
                                           "lengths": LENGTHS}, indent=2))
        try:
            done = subprocess.run(
                [sys.executable, "-m", "selfdisco.discovery.proposer.selftrain", str(job)],
                timeout=self.timeout_s, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return Trained(False, None, f"training took over {self.timeout_s:.0f} s")
        result = Trained.read(out / RESULT_FILE)
        if result is None:
            tail = (done.stderr or "").strip().splitlines()[-1:] or ["no output"]
            return Trained(False, None, f"the training process ended ({done.returncode}): "
                                        f"{tail[0][:300]}")
        return result


class RecordedTrainer:
    """A replayed run's proposer adapters: the recorded run's, trained with the same pairs."""

    def __init__(self, source_run_dir: Path) -> None:
        self.source = Path(source_run_dir)

    def train(self, name: str, pairs_path: Path, loss: dict, seed: int, steps: int) -> Trained:
        recorded = Trained.read(proposer_dir(self.source) / name / RESULT_FILE)
        return recorded or Trained(False, None, f"the recorded run {self.source} trained no "
                                                f"proposer adapter {name}")


def default_trainer(config, run_dir: Path):
    """The replayed run's recorded adapters under a replay source; else trained here."""
    source = parse_source(config.server.proposer_source)
    if source.kind == "replay":
        return RecordedTrainer(source.run_dir)
    return ProposerTrainer(run_dir, config.discovery.candidate_timeout_min * 60)


def train_job(job: dict) -> Trained:
    """Train one proposer adapter as a job file says (in the child process)."""
    from selfdisco.train.adapter import train_adapter  # lazy: loads torch, transformers

    config = read_run_config(Path(job["run_dir"]))
    settings = run_train_settings(config).with_overrides(max_steps=job["steps"], **job["lengths"])
    out = Path(job["pairs"]).parent
    loss = job["loss"]
    trained = train_adapter(model_path=resolve_model(config.models.policy), data=job["pairs"],
                            settings=settings, out_dir=out, seed=job["seed"],
                            candidate=Candidate(thought="", name=loss["name"], code=loss["code"]))
    if not trained.ok:
        return Trained(False, None, trained.error or trained.status)
    return Trained(True, str(trained.adapter_path), f"{trained.steps_done} steps under "
                                                    f"{loss['name']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    job_path = Path(argv[0])
    try:
        result = train_job(json.loads(job_path.read_text()))
    except Exception as err:  # noqa: BLE001 - any failure is the result

        result = Trained(False, None, one_line(err))
    write_text_atomic(job_path.parent / RESULT_FILE, json.dumps(
        {"ok": result.ok, "adapter": result.adapter, "reason": result.reason}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

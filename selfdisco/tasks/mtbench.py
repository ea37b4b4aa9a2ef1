"""mtbench: the paper's discovery task, judged by an open model served by vLLM.

Questions come in MT-Bench's JSONL form (question_id, category, turns: two user messages,
optional reference answers), from a local file or a Hugging Face dataset id. The policy (base +
adapter) answers both turns through vLLM; the judge rates each answer 1-10 (single mode,
reference-guided for math, reasoning and coding) or compares it with the base model's answer in
both orders (pairwise mode), its verdict constrained to JSON by the server (selfdisco.tasks.judge).

Every evaluation also measures the judge's agreement on answer pairs whose better answer is
known (selfdisco/data/judge_pairs.jsonl) and reports it with the parse rate; below
min_parse_rate or min_agreement the score is not a fitness (n = 0, the reason in the metrics).
A judge that is the policy's own base model favours its own style: it is refused unless the
option allow_self_judge is on, and then the metrics say so.

KL: this task reports no divergence from the reference, so its fitness has no KL term (the
sentiment task's fitness does); a judged score can still reward drift, and a KL term would need
the policy's log-probs on its answers, not measured here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.datafiles import load_table
from selfdisco.errors import UserError
from selfdisco.presets import per_preset
from selfdisco.rundir.paths import DATA_DIR
from selfdisco.tasks.base import (
    Fitness,
    TaskContext,
    preset_settings,
    train_recipe,
)
from selfdisco.tasks.judge import (
    MIN_AGREEMENT,
    MIN_PARSE_RATE,
    Judge,
    PairGame,
    Rating,
    load_known_pairs,
    pair_agreement,
    pairwise_statistics,
    rating_statistics,
    unreliable_reason,
)
from selfdisco.tasks.sampling import parallel_map, served_adapter
from selfdisco.train.data import load_preferences
from selfdisco.train.settings import PAPER_RECIPE, SMOKE_RECIPE, TrainSettings

SHIPPED_QUESTIONS = DATA_DIR / "mtbench_mini.jsonl"
SHIPPED_PREFERENCES = DATA_DIR / "preferences_mini.jsonl"

# Answer temperature per category, as MT-Bench samples them (deterministic where an answer is
# right or wrong, some freedom for writing and role-play).
SELF_JUDGE_OPT_IN = "task.options.allow_self_judge=true"

CATEGORY_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0,
                        "coding": 0.0, "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}


@dataclass(frozen=True)
class Question:
    question_id: Any
    category: str
    turns: list[str]
    reference: list[str] | None = None


@dataclass(frozen=True)
class MTBenchSettings:
    questions: str = str(SHIPPED_QUESTIONS)
    """MT-Bench questions: a local .jsonl file or a Hugging Face dataset id."""
    data: str = str(SHIPPED_PREFERENCES)
    """Preference data for training: a Hugging Face id (argilla/dpo-mix-7k) or a local file."""
    mode: str = "single"
    """single: mean 1-10 rating; pairwise: win rate against the base model's answers."""
    max_questions: int = 0
    """Use only the first N questions (0: all)."""
    answer_tokens: int = 256
    """Longest policy answer per turn, in tokens."""
    judge_tokens: int = 256
    """Longest judge reply, in tokens (its reasoning is cut to fit, see selfdisco.tasks.judge)."""
    judge_model: str = ""
    """Model name to ask on the judge's server (empty: the server's base model)."""
    allow_self_judge: bool = False
    """Let the policy's own base model judge (it favours its own style; refused otherwise)."""
    min_parse_rate: float = MIN_PARSE_RATE
    """Below this share of parsed verdicts the score is not a fitness (selfdisco.tasks.judge)."""
    min_agreement: float = MIN_AGREEMENT
    """Below this agreement on the known pairs the score is not a fitness (0.5: guessing)."""
    concurrency: int = 8
    """Requests in flight to the servers."""


PRESET_SETTINGS = per_preset({
    # The tiny random model answers with noise and cannot judge: this exercises the pipeline,
    # so it scores whatever the judge's agreement (the threshold is off).
    "smoke": MTBenchSettings(answer_tokens=24, judge_tokens=64, min_agreement=0.0),
    "cpu": MTBenchSettings(),
    "gpu-zephyr": MTBenchSettings(questions="lighteval/mt-bench", data="argilla/dpo-mix-7k",
                                  answer_tokens=1024, judge_tokens=1024, concurrency=32),
})

# The training recipe per preset (config train.recipe).
TRAIN_RECIPES = per_preset({
    "smoke": SMOKE_RECIPE,
    # SmolLM2-135M on 2 CPU cores: about 3-4 s per step at batch 4, max length 128.
    "cpu": TrainSettings(lora_r=16, lora_alpha=32, learning_rate=1e-4, max_steps=32,
                         batch_size=4, max_length=128, max_prompt_length=64),
    "gpu-zephyr": PAPER_RECIPE,
})


def load_questions(source: str) -> list[Question]:
    """Questions from a local file or a Hugging Face dataset (selfdisco.datafiles).

    Accepts MT-Bench's own field names (question_id, turns) and the Hub variants (prompt_id,
    prompt). Raises UserError for a missing or unreadable file or a malformed question.
    """
    table, where = load_table(source, what="question")
    if len(table) == 0:
        raise UserError(f"{where} holds no questions")
    if not {"turns", "prompt"} & set(table.column_names):
        raise UserError(f"{where}: missing column turns (or prompt) (its columns: "
                        f"{', '.join(table.column_names)}); the task option questions must name "
                        "MT-Bench questions with question_id, category and turns")
    return [_question(row, i, where) for i, row in enumerate(table.to_list(), 1)]


def _question(row: Any, number: int, where: str) -> Question:
    row = {k: v for k, v in row.items() if v is not None}  # a table's empty cell
    turns = row.get("turns", row.get("prompt"))
    if (not isinstance(turns, list) or not 1 <= len(turns) <= 2
            or not all(isinstance(t, str) and t.strip() for t in turns)):
        raise UserError(f"{where}, question {number}: 'turns' must be a list of one or two "
                        "non-empty strings")
    reference = row.get("reference") or None
    if reference is not None and (not isinstance(reference, list)
                                  or not all(isinstance(r, str) for r in reference)):
        raise UserError(f"{where}, question {number}: 'reference' must be a list of strings")
    qid = row.get("question_id", row.get("prompt_id", number))
    return Question(qid, str(row.get("category", "")), list(turns), reference)


class MTBenchTask:
    """Two-turn questions answered by the policy and judged by an open model."""

    name = "mtbench"
    kind = "preference"
    needs_judge = True
    description = "mean 1-10 rating (or win rate against the base) from an open LLM judge"
    pairs_version = 1  # pairs are read from the data option as they are

    def settings(self, ctx: TaskContext) -> MTBenchSettings:
        settings = preset_settings(self.name, PRESET_SETTINGS, ctx)
        if settings.mode not in ("single", "pairwise"):
            raise UserError(f"mtbench mode must be 'single' or 'pairwise', not {settings.mode!r}")
        for name in ("min_parse_rate", "min_agreement"):
            if not 0 <= getattr(settings, name) <= 1:
                raise UserError(f"{name} must be between 0 and 1, not {getattr(settings, name)}")
        return settings

    def check_options(self, preset: str, options: dict[str, Any]) -> None:
        """UserError for an unknown or mistyped option; reads nothing."""
        self.settings(TaskContext(preset=preset, options=dict(options)))

    def train_settings(self, recipe: str) -> TrainSettings:
        """The training recipe of this name (TRAIN_RECIPES)."""
        return train_recipe(self.name, TRAIN_RECIPES, recipe)

    def preference_data(self, ctx: TaskContext) -> Any:
        return load_preferences(self.settings(ctx).data)

    def score(self, ctx: TaskContext, adapter_path: str | None = None) -> Fitness:
        settings = self.settings(ctx)
        client = ctx.require_client(self.name)
        questions = load_questions(settings.questions)
        if settings.max_questions:
            questions = questions[:settings.max_questions]
        if settings.mode == "pairwise" and adapter_path is None:
            raise UserError("pairwise mode compares an adapter with the base model: give an "
                            "adapter")
        judge_client = ctx.judge_client or client
        self_judged = judge_warning(ctx, settings)
        if self_judged and not settings.allow_self_judge:
            raise UserError(f"{self_judged}: give another judge (selfdisco eval: --judge URL "
                            "--judge-model NAME), or accept this one with --option "
                            "allow_self_judge=true")
        started = time.perf_counter()
        with served_adapter(client, adapter_path) as model:
            answers = answer_questions(client, questions, model, settings, ctx.seed)
        answered = time.perf_counter()
        judge = Judge(judge_client, max_tokens=settings.judge_tokens,
                      model=settings.judge_model or None)
        if settings.mode == "pairwise":
            baseline = answer_questions(client, questions, None, settings, ctx.seed)
            fitness = _pairwise(judge, questions, answers, baseline, settings)
        else:
            fitness = _single(judge, questions, answers, settings)
        judged = time.perf_counter()
        agreement = pair_agreement(judge, load_known_pairs(), settings.mode,
                                   settings.concurrency)
        parse_rate = fitness.metrics["parse_rate"]
        fitness.metrics.update(
            agreement, self_judge=bool(self_judged),
            policy=str(adapter_path) if adapter_path else "base model",
            questions=len(questions), warnings=[self_judged] if self_judged else [],
            mean_answer_chars=_mean_chars(answers),
            answer_seconds=round(answered - started, 2),
            agreement_seconds=round(time.perf_counter() - judged, 2),
            seconds=round(time.perf_counter() - started, 2))
        reason = unreliable_reason(parse_rate, agreement["judge_agreement"],
                                   settings.min_parse_rate, settings.min_agreement)
        if reason:
            return Fitness(value=math.nan, stderr=None, n=0,
                           metrics={**fitness.metrics, "no_score_reason": reason})
        return fitness

    def check_judge(self, preset: str, options: dict[str, Any], policy: str,
                    judge: str) -> str | None:
        """UserError when `judge` is the policy's own base model without the opt-in; with it,
        a note saying so (for the run's header and report); None for another judge."""
        if judge != policy:
            return None
        settings = self.settings(TaskContext(preset=preset, options=dict(options)))
        if not settings.allow_self_judge:
            raise UserError(f"the judge ({judge}) is the policy's own base model, and a judge "
                            "favours its own family's style: set models.judge to another model"
                            f", or accept it with --set {SELF_JUDGE_OPT_IN}")
        return (f"self-judged: the judge ({judge}) is the policy's own base model "
                "(allow_self_judge); it favours its own family's style")


def answer_questions(client: Any, questions: list[Question], model: str | None,
                     settings: MTBenchSettings, seed: int) -> list[list[str]]:
    """The policy's answers to every turn, each turn seeing the conversation so far."""

    def one(index: int) -> list[str]:
        question = questions[index]
        temperature = CATEGORY_TEMPERATURE.get(question.category, 0.7)
        messages: list[dict[str, str]] = []
        answers = []
        for turn in question.turns:
            messages.append({"role": "user", "content": turn})
            reply = client.chat(messages, temperature=temperature,
                                max_tokens=settings.answer_tokens, seed=seed + index,
                                model=model)[0].text
            messages.append({"role": "assistant", "content": reply})
            answers.append(reply)
        return answers

    return parallel_map(one, list(range(len(questions))), settings.concurrency,
                        label="answering", unit="questions")


def _single(judge: Judge, questions: list[Question], answers: list[list[str]],
            settings: MTBenchSettings) -> Fitness:
    jobs = [(q, a, turn) for q, a in zip(questions, answers, strict=True)
            for turn in range(1, len(q.turns) + 1)]
    errors: list[str] = []

    def rate(job: tuple[Question, list[str], int]) -> Rating:
        question, answer, turn = job
        try:
            return judge.rate(question.question_id, question.turns, answer, turn,
                              question.category, question.reference)
        except Exception as err:  # noqa: BLE001 - a failed judge request is counted, not fatal
            errors.append(f"{type(err).__name__}: {str(err)[:200]}")
            return Rating(question.question_id, turn, None, len(answer[turn - 1]), "")

    ratings = parallel_map(rate, jobs, settings.concurrency, label="judging", unit="answers")
    scores = [r.score for r in ratings if r.score is not None]
    value, stderr = stats.mean_stderr(scores)
    metrics: dict[str, Any] = {"mode": "single", **rating_statistics(ratings),
                               "parse_rate": len(scores) / len(ratings) if ratings else 0.0,
                               "judge_errors": len(errors)}
    if errors:
        metrics["first_judge_error"] = errors[0]
    for turn in (1, 2):
        turn_scores = [r.score for r in ratings if r.turn == turn and r.score is not None]
        metrics[f"turn{turn}_mean"] = stats.mean(turn_scores)
    by_category: dict[str, list[float]] = {}
    for job, rating in zip(jobs, ratings, strict=True):
        if rating.score is not None:
            by_category.setdefault(job[0].category, []).append(rating.score)
    metrics["category_means"] = {c: stats.mean(s) for c, s in sorted(by_category.items())}
    metrics["judge_replies"] = [{"question_id": r.question_id, "turn": r.turn,
                                 "score": r.score, "reply": r.reply[:500]} for r in ratings]
    return Fitness(value=value, stderr=stderr, metrics=metrics, n=len(scores))


def _pairwise(judge: Judge, questions: list[Question], answers: list[list[str]],
              baseline: list[list[str]], settings: MTBenchSettings) -> Fitness:
    jobs = [(q, a, b, turn) for q, a, b in zip(questions, answers, baseline, strict=True)
            for turn in range(1, len(q.turns) + 1)]
    errors: list[str] = []

    def compare(job):
        question, policy, base, turn = job
        try:
            return judge.compare(question.question_id, question.turns, policy, base, turn,
                                 question.category, question.reference)
        except Exception as err:  # noqa: BLE001 - a failed judge request is counted, not fatal
            errors.append(f"{type(err).__name__}: {str(err)[:200]}")
            return PairGame(question.question_id, turn, None, None, len(policy[turn - 1]),
                            len(base[turn - 1]))

    games = parallel_map(compare, jobs, settings.concurrency, label="judging",
                         unit="answer pairs")
    figures = pairwise_statistics(games)
    metrics = {"mode": "pairwise (both orders; disagreement is a tie)", **figures,
               "parse_rate": figures["parsed"] / len(games) if games else 0.0,
               "judge_errors": len(errors)}
    if errors:
        metrics["first_judge_error"] = errors[0]
    return Fitness(value=figures["win_rate"], stderr=figures["win_rate_stderr"],
                   metrics=metrics, n=figures["parsed"])


def judge_warning(ctx: TaskContext, settings: MTBenchSettings) -> str | None:
    """What is wrong when the judge is the policy's own base model (it favours its own
    style), or None for another judge."""
    policy_names = {getattr(ctx.client, "model", None), ctx.model_path, Path(ctx.model_path).name}
    judge_client = ctx.judge_client or ctx.client
    judge_model = settings.judge_model or getattr(judge_client, "model", None)
    same_server = judge_client is ctx.client and not settings.judge_model
    if same_server or judge_model in policy_names - {None, ""}:
        return (f"the judge ({judge_model or ctx.model_path}) is the policy's own base model, "
                "and a judge favours its own family's style")
    return None


def _mean_chars(answers: list[list[str]]) -> float:
    lengths = [len(a) for turns in answers for a in turns]
    return sum(lengths) / len(lengths) if lengths else 0.0

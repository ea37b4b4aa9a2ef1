"""mtbench: question files, the answer-and-judge pipeline, pairwise mode, the judge's agreement
and thresholds, and the refusal of a judge from the policy's own base."""

from __future__ import annotations

import json
import math

import pytest

from selfdisco.errors import UserError
from selfdisco.llm.protocol import Completion
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.judge import load_known_pairs
from selfdisco.tasks.mtbench import SHIPPED_QUESTIONS, judge_warning, load_questions


def test_the_shipped_questions_cover_every_category_with_two_turns():
    questions = load_questions(str(SHIPPED_QUESTIONS))
    assert len(questions) == 8
    assert {q.category for q in questions} == {"writing", "roleplay", "reasoning", "math",
                                               "coding", "extraction", "stem", "humanities"}
    assert all(len(q.turns) == 2 for q in questions)
    assert all(q.reference and len(q.reference) == 2 for q in questions
               if q.category in ("math", "reasoning", "coding"))


def test_hub_style_field_names_are_accepted(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"prompt_id": 42, "category": "math", "prompt": ["1+1?", "2+2?"],
                                "reference": ["2", "4"]}) + "\n\n")
    (question,) = load_questions(str(path))
    assert question.question_id == 42 and question.turns == ["1+1?", "2+2?"]


@pytest.mark.parametrize("content, message", [
    ("{not json\n", "cannot read .*questions.jsonl: .*JSON parse error"),
    (json.dumps({"question_id": 1, "turns": []}) + "\n", "one or two non-empty strings"),
    (json.dumps({"question_id": 1, "turns": ["a", "b", "c"]}) + "\n", "one or two"),
    (json.dumps({"question_id": 1, "turns": "just text"}) + "\n", "one or two"),
    (json.dumps({"question_id": 1, "turns": ["a"], "reference": "r"}) + "\n", "list of strings"),
    (json.dumps([1, 2]) + "\n", r"missing column turns \(or prompt\) \(its columns: text\)"),
    ("\n", "holds no questions"),
])
def test_malformed_question_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "questions.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_questions(str(path))


def test_a_missing_question_file_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_questions(str(tmp_path / "missing.jsonl"))


JUDGE_REPLIES = [
    '{"reasoning": "The answer is relevant and accurate, with helpful detail.", "rating": 8}',
    '{"reasoning": "The answer repeats the question and gives no useful content.", "rating": 2}',
    "It mostly follows the instructions. Rating: [[6.5]]",  # a server without the schema
    '{"reasoning": "The answer is off-topic.", "rating": 11}',  # out of range: unparsable
    "",  # empty: unparsable
]
KNOWN = load_known_pairs()
SELF_JUDGED = {"allow_self_judge": "true"}


class ScriptedServer:
    """Stands in for the policy and judge models only: canned answers; judge replies in turn
    for MT-Bench questions, and for the known pairs a rating or verdict from `known_judge`
    ("right": prefers the better answer, "flat": rates everything 5)."""

    model = "policy-base"

    def __init__(self, judge_replies: list[str], failing_judge_calls: int = 0,
                 known_judge: str = "right"):
        self.judge_replies = judge_replies
        self.failing = failing_judge_calls
        self.known_judge = known_judge
        self.judge_calls = 0
        self.schemas: list[dict] = []
        self.answer_calls: list[str | None] = []
        self.adapters: list[tuple[str, str]] = []

    def chat(self, messages, *, model=None, json_schema=None, **options):
        if messages[0]["role"] != "system":  # the policy answers
            self.answer_calls.append(model)
            turn = sum(m["role"] == "user" for m in messages)
            return [Completion(text=f"answer to turn {turn} from {model or 'base'}",
                               finish_reason="stop")]
        self.schemas.append(json_schema)
        pair = next((p for p in KNOWN if f"\n{p.question}\n" in messages[1]["content"]), None)
        if pair is not None:
            return [Completion(text=self._knowing(pair, messages[1]["content"]),
                               finish_reason="stop")]
        self.judge_calls += 1
        if self.judge_calls <= self.failing:
            raise RuntimeError("judge prompt too long")
        reply = self.judge_replies[(self.judge_calls - 1) % len(self.judge_replies)]
        return [Completion(text=reply, finish_reason="stop")]

    def _knowing(self, pair, prompt: str) -> str:
        if "Assistant A's Answer" in prompt:
            verdict = "A" if _block(prompt, "Assistant A's Answer") == pair.better else "B"
            return json.dumps({"reasoning": "one is right", "verdict": verdict})
        answer = _block(prompt, "the Assistant's Answer")
        rating = 5 if self.known_judge == "flat" else 9 if answer == pair.better else 2
        return json.dumps({"reasoning": "compared with the question", "rating": rating})

    def load_adapter(self, name, path):
        self.adapters.append(("load", name))

    def unload_adapter(self, name):
        self.adapters.append(("unload", name))


def _block(prompt: str, name: str) -> str:
    """The text between a judge template's [The Start of NAME] and [The End of NAME]."""
    return prompt.split(f"[The Start of {name}]\n")[1].split(f"\n[The End of {name}]")[0]


def test_single_mode_rates_every_turn_and_counts_what_it_cannot_parse():
    server = ScriptedServer(JUDGE_REPLIES)
    ctx = TaskContext(client=server, model_path="models/policy-base",
                      options={"concurrency": "1", "min_parse_rate": "0", **SELF_JUDGED})
    fitness = get_task("mtbench").score(ctx)
    metrics = fitness.metrics
    assert metrics["ratings"] == 16 and server.judge_calls == 16
    # 16 replies cycle through the 5 scripted ones: 4 x [8, 2, 6.5] parse, the rest do not.
    assert metrics["unparsable"] == 16 - fitness.n
    parsed = [8, 2, 6.5, None, None] * 4
    scores = [s for s in parsed[:16] if s is not None]
    assert fitness.n == len(scores) and metrics["parse_rate"] == len(scores) / 16
    assert fitness.value == pytest.approx(sum(scores) / len(scores))
    assert metrics["questions"] == 8 and metrics["judge_errors"] == 0
    assert metrics["self_judge"] and "own base model" in metrics["warnings"][0]
    assert len(metrics["judge_replies"]) == 16
    assert set(server.answer_calls) == {None}
    # Every judge request carries the verdict schema; the known pairs are rated both ways.
    assert len(server.schemas) == 16 + 2 * len(KNOWN)
    assert all(schema["required"] == ["reasoning", "rating"] for schema in server.schemas)
    assert metrics["judge_agreement"] == 1.0 and metrics["judge_agreement_n"] == len(KNOWN)


def test_judge_failures_are_counted_and_nothing_parsable_is_no_score():
    server = ScriptedServer(["garbage"], failing_judge_calls=3)
    fitness = get_task("mtbench").score(TaskContext(client=server, model_path="m",
                                                       options=SELF_JUDGED))
    assert fitness.n == 0 and not fitness.ok and math.isnan(fitness.value)
    assert fitness.metrics["unparsable"] == 16 and fitness.metrics["judge_errors"] == 3
    assert "too long" in fitness.metrics["first_judge_error"]
    assert "parse rate 0.00 is below 0.9" in fitness.summary()


def test_a_judge_that_cannot_tell_good_from_bad_gives_no_fitness():
    server = ScriptedServer(['{"reasoning": "fine", "rating": 7}'], known_judge="flat")
    fitness = get_task("mtbench").score(TaskContext(client=server, model_path="m",
                                                       options=SELF_JUDGED))
    metrics = fitness.metrics
    assert metrics["parse_rate"] == 1.0 and metrics["judge_agreement"] == 0.5
    assert not fitness.ok and fitness.n == 0
    assert "agreement on answer pairs of known quality 0.50 is below 0.75" in fitness.summary()
    assert metrics["parsed"] == 16  # the ratings are still there to read


def test_another_judge_scores_with_its_agreement_beside_the_fitness():
    policy = ScriptedServer([])
    judge = ScriptedServer(['{"reasoning": "fine", "rating": 7}'])
    judge.model = "Qwen/Qwen2.5-7B-Instruct"
    ctx = TaskContext(client=policy, judge_client=judge, model_path="x/policy-base")
    fitness = get_task("mtbench").score(ctx)
    metrics = fitness.metrics
    assert fitness.ok and fitness.value == 7.0 and fitness.n == 16
    assert metrics["parse_rate"] == 1.0 and metrics["judge_agreement"] == 1.0
    assert metrics["judge_agreement_n"] == 24 and metrics["judge_agreement_failed"] == 0
    assert not metrics["self_judge"] and metrics["warnings"] == []
    assert policy.schemas == [] and len(judge.schemas) == 16 + 48


def test_the_policys_own_base_model_is_refused_as_judge_unless_allowed():
    server = ScriptedServer(['{"reasoning": "fine", "rating": 7}'])
    task = get_task("mtbench")
    with pytest.raises(UserError, match="own base model.*--option allow_self_judge=true"):
        task.score(TaskContext(client=server, model_path="m"))
    assert server.judge_calls == 0 and server.answer_calls == []
    assert task.score(TaskContext(client=server, model_path="m", options=SELF_JUDGED)).ok


def test_pairwise_mode_answers_with_both_models_and_judges_both_orders(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    # Each game asks twice: policy first (A) then policy second (B) -> a win.
    server = ScriptedServer(['{"reasoning": "A is better", "verdict": "A"}',
                             "Assistant B is better. [[B]]"])
    ctx = TaskContext(client=server, model_path="m",
                      options={"mode": "pairwise", "max_questions": "2", "concurrency": "1",
                               **SELF_JUDGED})
    fitness = get_task("mtbench").score(ctx, adapter_path=str(adapter))
    assert fitness.metrics["games"] == 4 and server.judge_calls == 8
    assert fitness.metrics["wins"] == 4 and fitness.value == 1.0
    assert fitness.metrics["consistency"] == 1.0 and fitness.metrics["parse_rate"] == 1.0
    assert fitness.metrics["judge_agreement"] == 1.0
    assert all(schema["required"] == ["reasoning", "verdict"] for schema in server.schemas)
    assert "policy_mean_chars" in fitness.metrics and "baseline_mean_chars" in fitness.metrics
    assert [kind for kind, _ in server.adapters] == ["load", "unload"]
    adapter_name = server.adapters[0][1]
    assert server.answer_calls.count(adapter_name) == 4 and server.answer_calls.count(None) == 4


def test_pairwise_needs_an_adapter_and_mode_is_checked():
    task = get_task("mtbench")
    server = ScriptedServer(["[[A]]"])
    with pytest.raises(UserError, match="pairwise mode compares an adapter"):
        task.score(TaskContext(client=server, options={"mode": "pairwise"}))
    with pytest.raises(UserError, match="mode must be"):
        task.score(TaskContext(client=server, options={"mode": "duel"}))


def test_the_judge_warning_names_a_judge_from_the_policy_base():
    task = get_task("mtbench")
    policy = ScriptedServer([])
    judge = ScriptedServer([])
    judge.model = "Qwen/Qwen2.5-7B-Instruct"
    ctx = TaskContext(client=policy, model_path="checkpoints/models/policy-base")
    assert judge_warning(ctx, task.settings(ctx))
    other = TaskContext(client=policy, judge_client=judge, model_path="x/policy-base")
    assert judge_warning(other, task.settings(other)) is None
    same = ScriptedServer([])  # a separate server, but serving the policy's base model
    ctx_same = TaskContext(client=policy, judge_client=same, model_path="x/policy-base")
    assert judge_warning(ctx_same, task.settings(ctx_same))
    named = TaskContext(client=policy, model_path="m", options={"judge_model": "big-judge"})
    assert judge_warning(named, task.settings(named)) is None


def test_preference_data_defaults_to_the_shipped_pairs():
    data = get_task("mtbench").preference_data(TaskContext(preset="smoke"))
    assert len(data) == 12 and set(data.column_names) == {"prompt", "chosen", "rejected"}
    with pytest.raises(UserError):
        get_task("mtbench").preference_data(TaskContext(options={"data": "/no/such/file.jsonl"}))


def test_a_run_refuses_a_judge_from_the_policys_base_unless_opted_in():
    from selfdisco.config import load_config
    from selfdisco.launch.checks import check_run, judge_note

    def mtbench(options: dict, **models) -> object:
        config = load_config("cpu", overrides={"task": {"name": "mtbench"}, "models": models})
        config.task.options = options  # the cpu preset's options are the sentiment task's
        return config

    config = mtbench({})
    assert config.judge_model == config.models.policy
    with pytest.raises(UserError, match="own base model.*task.options.allow_self_judge=true"):
        check_run(config)
    allowed = mtbench({"allow_self_judge": True})
    check_run(allowed)
    assert judge_note(allowed).startswith("self-judged: the judge (smollm2-135m-instruct)")
    assert judge_note(mtbench({}, judge="some/other-judge")) == ""
    assert judge_note(load_config("cpu")) == ""  # sentiment needs no judge


def test_judge_thresholds_are_options_between_0_and_1():
    task = get_task("mtbench")
    assert task.settings(TaskContext(preset="cpu")).min_agreement == 0.75
    assert task.settings(TaskContext(preset="smoke")).min_agreement == 0.0
    with pytest.raises(UserError, match="min_agreement must be between 0 and 1"):
        task.check_options("cpu", {"min_agreement": 2})

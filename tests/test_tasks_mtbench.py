"""mtbench: question files, the answer-and-judge pipeline, pairwise mode, the judge warning."""

from __future__ import annotations

import json
import math

import pytest

from selfdisco.errors import UserError
from selfdisco.llm.protocol import Completion
from selfdisco.tasks import TaskContext, get_task
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
    ("{not json\n", "line 1: not JSON"),
    (json.dumps({"question_id": 1, "turns": []}) + "\n", "one or two non-empty strings"),
    (json.dumps({"question_id": 1, "turns": ["a", "b", "c"]}) + "\n", "one or two"),
    (json.dumps({"question_id": 1, "turns": "just text"}) + "\n", "one or two"),
    (json.dumps({"question_id": 1, "turns": ["a"], "reference": "r"}) + "\n", "list of strings"),
    (json.dumps([1, 2]) + "\n", "expected a JSON object"),
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
    "The answer is relevant and accurate, with helpful detail.\n\nRating: [[8]]",
    "The answer repeats the question and gives no useful content.\nRating: [[2]]",
    "It mostly follows the instructions. Rating: [[6.5]]",
    "The assistant's answer is off-topic.\n\nRating: 2",  # no brackets: unparsable
    "",  # empty: unparsable
]


class ScriptedServer:
    """Stands in for the policy and judge models only: canned answers, judge replies in turn."""

    model = "policy-base"

    def __init__(self, judge_replies: list[str], failing_judge_calls: int = 0):
        self.judge_replies = judge_replies
        self.failing = failing_judge_calls
        self.judge_calls = 0
        self.answer_calls: list[str | None] = []
        self.adapters: list[tuple[str, str]] = []

    def chat(self, messages, *, model=None, **options):
        if messages[0]["role"] == "system":  # a judge prompt
            self.judge_calls += 1
            if self.judge_calls <= self.failing:
                raise RuntimeError("judge prompt too long")
            reply = self.judge_replies[(self.judge_calls - 1) % len(self.judge_replies)]
            return [Completion(text=reply, finish_reason="stop")]
        self.answer_calls.append(model)
        turn = sum(m["role"] == "user" for m in messages)
        return [Completion(text=f"answer to turn {turn} from {model or 'base'}",
                           finish_reason="stop")]

    def load_adapter(self, name, path):
        self.adapters.append(("load", name))

    def unload_adapter(self, name):
        self.adapters.append(("unload", name))


def test_single_mode_rates_every_turn_and_counts_what_it_cannot_parse():
    server = ScriptedServer(JUDGE_REPLIES)
    ctx = TaskContext(client=server, model_path="models/policy-base", options={"concurrency": "1"})
    fitness = get_task("mtbench").evaluate(ctx)
    metrics = fitness.metrics
    assert metrics["ratings"] == 16 and server.judge_calls == 16
    # 16 replies cycle through the 5 scripted ones: 4 x [8, 2, 6.5] parse, the rest do not.
    assert metrics["unparsable"] == 16 - fitness.n
    parsed = [8, 2, 6.5, None, None] * 4
    scores = [s for s in parsed[:16] if s is not None]
    assert fitness.n == len(scores)
    assert fitness.value == pytest.approx(sum(scores) / len(scores))
    assert metrics["questions"] == 8 and metrics["judge_errors"] == 0
    assert "own base model" in metrics["warnings"][0]
    assert len(metrics["judge_replies"]) == 16
    assert set(server.answer_calls) == {None}


def test_judge_failures_are_counted_and_nothing_parsable_is_no_score():
    server = ScriptedServer(["garbage"], failing_judge_calls=3)
    fitness = get_task("mtbench").evaluate(TaskContext(client=server, model_path="m"))
    assert fitness.n == 0 and not fitness.ok and math.isnan(fitness.value)
    assert fitness.metrics["unparsable"] == 16 and fitness.metrics["judge_errors"] == 3
    assert "too long" in fitness.metrics["first_judge_error"]


def test_pairwise_mode_answers_with_both_models_and_judges_both_orders(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    # Each game asks twice: policy first ([[A]]) then policy second ([[B]]) -> a win.
    server = ScriptedServer(["Assistant A is better. [[A]]", "Assistant B is better. [[B]]"])
    ctx = TaskContext(client=server, model_path="m",
                      options={"mode": "pairwise", "max_questions": "2", "concurrency": "1"})
    fitness = get_task("mtbench").evaluate(ctx, adapter_path=str(adapter))
    assert fitness.metrics["games"] == 4 and server.judge_calls == 8
    assert fitness.metrics["wins"] == 4 and fitness.value == 1.0
    assert fitness.metrics["consistency"] == 1.0
    assert "policy_mean_chars" in fitness.metrics and "baseline_mean_chars" in fitness.metrics
    assert [kind for kind, _ in server.adapters] == ["load", "unload"]
    adapter_name = server.adapters[0][1]
    assert server.answer_calls.count(adapter_name) == 4 and server.answer_calls.count(None) == 4


def test_pairwise_needs_an_adapter_and_mode_is_checked():
    task = get_task("mtbench")
    server = ScriptedServer(["[[A]]"])
    with pytest.raises(UserError, match="pairwise mode compares an adapter"):
        task.evaluate(TaskContext(client=server, options={"mode": "pairwise"}))
    with pytest.raises(UserError, match="mode must be"):
        task.evaluate(TaskContext(client=server, options={"mode": "duel"}))


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

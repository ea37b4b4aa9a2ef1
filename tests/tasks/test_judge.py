"""The judge: rating and verdict parsing on real-looking replies, templates, both-order games."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from selfdisco.llm.protocol import Completion
from selfdisco.rundir.paths import prompts_dir
from selfdisco.tasks import judge
from selfdisco.tasks.judge import PairGame, Rating, combine_orders, parse_rating, parse_verdict

DATA = Path(__file__).resolve().parents[1] / "data"  # tests/data


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line]


@pytest.mark.parametrize("row", _rows("judge_replies.jsonl"), ids=lambda r: r["reply"][:40])
def test_parse_rating_on_judge_replies(row):
    assert parse_rating(row["reply"]) == row["rating"]


@pytest.mark.parametrize("row", _rows("judge_verdicts.jsonl"), ids=lambda r: r["reply"][:40])
def test_parse_verdict_on_judge_replies(row):
    assert parse_verdict(row["reply"]) == row["verdict"]


def test_both_orders_must_agree_for_a_win_or_a_loss():
    # first: policy shown as A; second: policy shown as B.
    assert combine_orders("A", "B") == "win"
    assert combine_orders("B", "A") == "loss"
    assert combine_orders("A", "A") == "tie"  # position bias: the first answer always wins
    assert combine_orders("B", "B") == "tie"
    assert combine_orders("tie", "B") == "tie"
    assert combine_orders("tie", "tie") == "tie"
    assert combine_orders(None, "B") is None
    assert combine_orders("A", None) is None


def test_pairwise_statistics_counts_ties_half_and_measures_biases():
    games = [
        PairGame(1, 1, "A", "B", policy_chars=300, baseline_chars=100),  # win, longer wins
        PairGame(2, 1, "A", "B", policy_chars=50, baseline_chars=200),   # win, shorter wins
        PairGame(3, 1, "B", "A", policy_chars=90, baseline_chars=400),   # loss, longer wins
        PairGame(4, 1, "A", "A", policy_chars=100, baseline_chars=100),  # disagreement: tie
        PairGame(5, 2, None, "A", policy_chars=10, baseline_chars=10),   # unparsable
    ]
    stats = judge.pairwise_statistics(games)
    assert (stats["wins"], stats["losses"], stats["ties"]) == (2, 1, 1)
    assert stats["parsed"] == 4 and stats["unparsable"] == 1
    assert stats["win_rate"] == pytest.approx((2 + 0.5) / 4)
    scores = [1, 1, 0, 0.5]
    mean = sum(scores) / 4
    expected_se = math.sqrt(sum((s - mean) ** 2 for s in scores) / 3 / 4)
    assert stats["win_rate_stderr"] == pytest.approx(expected_se)
    assert stats["consistency"] == pytest.approx(3 / 4)
    # Decisive single verdicts: A, B, A, B, B, A, A, A -> 5 of 8 name the first position.
    assert stats["first_position_rate"] == pytest.approx(5 / 8)
    assert stats["longer_wins_rate"] == pytest.approx(2 / 3)
    assert stats["policy_mean_chars"] == pytest.approx((300 + 50 + 90 + 100 + 10) / 5)


def test_rating_statistics_counts_unparsable_and_correlates_length():
    ratings = [Rating(1, 1, 2.0, 10, ""), Rating(1, 2, 5.0, 50, ""), Rating(2, 1, 8.0, 90, ""),
               Rating(2, 2, None, 40, "no rating")]
    stats = judge.rating_statistics(ratings)
    assert (stats["ratings"], stats["parsed"], stats["unparsable"]) == (4, 3, 1)
    assert stats["rating_length_correlation"] == pytest.approx(1.0)


def test_every_judge_template_fills_with_its_fields():
    names = sorted(p.stem for p in (prompts_dir() / "judge").glob("*.txt"))
    assert {"single", "single_ref", "single_turn2", "single_turn2_ref", "pair", "pair_ref",
            "pair_turn2", "pair_turn2_ref", "single_system", "pair_system"} <= set(names)
    with pytest.raises(KeyError, match="missing"):
        judge.fill(judge.load_template("single"), question="q")
    with pytest.raises(KeyError, match="unexpected"):
        judge.fill(judge.load_template("single"), question="q", answer="a", extra="x")


def test_rating_messages_use_the_reference_for_math_and_the_conversation_for_turn_two():
    turns, answers = ["What is 2+2?", "And 3+3?"], ["It is {four}.", "Six."]
    reference = ["4", "6"]
    first = judge.rating_messages(turns, answers, 1, "math", reference)
    assert first[0]["role"] == "system" and "Reference Answer" in first[1]["content"]
    assert "It is {four}." in first[1]["content"]  # braces in answers survive filling
    plain = judge.rating_messages(turns, answers, 1, "writing", reference)
    assert "Reference" not in plain[1]["content"]
    second = judge.rating_messages(turns, answers, 2, "reasoning", reference)
    body = second[1]["content"]
    assert "What is 2+2?" in body and "And 3+3?" in body and "Six." in body
    assert "Reference answer" in body and '{"reasoning": "...", "rating": 5}' in body
    pair = judge.pair_messages(turns, ["A1", "A2"], ["B1", "B2"], 2, "stem")
    body = pair[1]["content"]
    assert "A2" in body and "B2" in body and '{"reasoning": "...", "verdict": "C"}' in body


class ScriptedJudge:
    """Stands in for the judge model only: answers each request from a list of replies."""

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.requests: list[list[dict]] = []

    def chat(self, messages, **options):
        self.requests.append(messages)
        self.schemas = [*getattr(self, "schemas", []), options.get("json_schema")]
        return [Completion(text=self.replies.pop(0), finish_reason="stop")]


def test_compare_judges_both_orders_with_the_answers_swapped():
    client = ScriptedJudge(["A is better. [[A]]", "B is better. [[B]]"])
    game = judge.Judge(client).compare(7, ["Q"], ["policy answer"], ["base answer"], 1)
    assert game.outcome == "win"
    first, second = (m[1]["content"] for m in client.requests)
    assert first.index("policy answer") < first.index("base answer")
    assert second.index("base answer") < second.index("policy answer")


@pytest.mark.parametrize(("reply", "rating"), [
    ('{"reasoning": "Correct and complete.", "rating": 9}', 9.0),
    ('{"reasoning": "Wrong sum.", "rating": 1}', 1.0),
    ('{"reasoning": "x", "rating": 10}', 10.0),
    ('{"reasoning": "x", "rating": 0}', None),
    ('{"reasoning": "x", "rating": 11}', None),
    ('{"reasoning": "x", "rating": 7.5}', None),
    ('{"reasoning": "x", "rating": true}', None),
    ('{"reasoning": "x", "rating": "8"}', None),
    ('{"reasoning": "I would say Rating: [[8]]"}', None),  # JSON without a rating: no fallback
    ("Rating: [[8]]", 8.0),  # a server that ignores the schema: MT-Bench's form
])
def test_parse_rating_reads_the_structured_verdict(reply, rating):
    assert parse_rating(reply) == rating


def test_parse_verdict_reads_the_structured_verdict():
    assert parse_verdict('{"reasoning": "A is right", "verdict": "A"}') == "A"
    assert parse_verdict('{"reasoning": "B is right", "verdict": "B"}') == "B"
    assert parse_verdict('{"reasoning": "both fine", "verdict": "C"}') == "tie"
    assert parse_verdict('{"reasoning": "[[A]]", "verdict": "D"}') is None
    assert parse_verdict('["A"]') is None


def test_the_verdict_schema_puts_reasoning_first_and_fits_the_token_limit():
    schema = judge.verdict_schema("rating", 256)
    assert list(schema["properties"]) == ["reasoning", "rating"]
    assert schema["properties"]["rating"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert schema["properties"]["reasoning"]["maxLength"] == 256 - judge.SCHEMA_OVERHEAD_TOKENS
    assert schema["required"] == ["reasoning", "rating"] and not schema["additionalProperties"]
    verdict = judge.verdict_schema("verdict", 64)
    assert verdict["properties"]["verdict"]["enum"] == ["A", "B", "C"]
    client = ScriptedJudge(['{"reasoning": "ok", "rating": 6}'])
    rating = judge.Judge(client, max_tokens=128).rate(1, ["Q"], ["A"], 1)
    assert rating.score == 6.0 and client.schemas == [judge.verdict_schema("rating", 128)]


def test_the_shipped_known_pairs_have_one_clearly_better_answer():
    pairs = judge.load_known_pairs()
    assert len(pairs) == 24
    assert {p.kind for p in pairs} == {"arithmetic", "off-topic", "truncated"}
    assert all(p.better.strip() and p.worse.strip() and p.better != p.worse for p in pairs)
    assert all(p.reference == p.better for p in pairs if p.kind == "arithmetic")


def test_a_bad_known_pairs_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"question": "q", "better": "a"}\n')
    with pytest.raises(judge.UserError, match="line 1: not a judge pair"):
        judge.load_known_pairs(bad)


def test_agreement_counts_ties_half_and_failures_as_misses():
    pairs = [judge.KnownPair(f"question {i}", f"good {i}", f"bad {i}") for i in range(4)]
    # Rated in order: (better, worse) per pair; pair 3's second rating does not parse.
    replies = [9, 2, 5, 5, 3, 8, 7]
    client = ScriptedJudge([json.dumps({"reasoning": "r", "rating": r}) for r in replies]
                           + ["no verdict"])
    result = judge.pair_agreement(judge.Judge(client), pairs, "single", concurrency=1)
    assert result == {"judge_agreement": (1 + 0.5 + 0 + 0) / 4, "judge_agreement_n": 4,
                      "judge_agreement_failed": 1}
    # Pairwise: the better answer is shown first, then second; both orders must agree.
    client = ScriptedJudge(['{"reasoning": "r", "verdict": "A"}',
                            '{"reasoning": "r", "verdict": "B"}',
                            '{"reasoning": "r", "verdict": "A"}',
                            '{"reasoning": "r", "verdict": "A"}'])
    result = judge.pair_agreement(judge.Judge(client), pairs[:2], "pairwise", concurrency=1)
    assert result["judge_agreement"] == (1 + 0.5) / 2 and result["judge_agreement_failed"] == 0


def test_scores_below_the_parse_rate_or_agreement_thresholds_are_not_a_fitness():
    assert judge.unreliable_reason(1.0, 0.75) is None
    assert judge.unreliable_reason(0.9, 1.0) is None
    assert "parse rate 0.85 is below 0.9" in judge.unreliable_reason(0.85, 1.0)
    assert "agreement on answer pairs of known quality 0.50" in judge.unreliable_reason(1.0, 0.5)
    assert "parse rate" in judge.unreliable_reason(0.0, math.nan)
    assert "agreement" in judge.unreliable_reason(0.0, math.nan)
    assert judge.unreliable_reason(0.5, 0.5, min_parse_rate=0.5, min_agreement=0.0) is None

"""An open LLM as judge: single-answer ratings, pairwise verdicts in both orders, bias statistics.

The protocol follows MT-Bench: the judge rates an answer 1-10; math, reasoning and coding
answers are graded against a reference answer; the second turn is judged with the whole
conversation in view. Pairwise judging runs both orders, because judges favour one position,
and a pair whose two verdicts disagree counts as a tie. The verdict is constrained by the
server's structured outputs to a JSON object, its reasoning first and then the rating (or the
verdict), so even a small judge writes one that parses; MT-Bench's "[[n]]" form is still read
from a server that ignores the schema. Templates live in prompts/judge/; this module only fills
them. Agreement on answer pairs whose better answer is known (selfdisco/data/judge_pairs.jsonl)
measures whether the judge can tell good from bad at all.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.errors import UserError
from selfdisco.formatting import format_rate
from selfdisco.rundir.paths import DATA_DIR, prompts_dir
from selfdisco.tasks.sampling import parallel_map

KNOWN_PAIRS = DATA_DIR / "judge_pairs.jsonl"

# Below either, a judge's scores are not a fitness. Structured outputs make every reply parse,
# so a parse rate under 0.9 means the server is not constraining the judge (or its requests
# fail) and the parsed rest is a biased sample. Agreement is 0.5 for a judge that guesses; on
# the 24 shipped pairs a guessing judge reaches 0.75 (18 of 24) with probability about 1%.
MIN_PARSE_RATE = 0.9
MIN_AGREEMENT = 0.75

# Categories whose answers are graded against a reference answer.
REFERENCE_CATEGORIES = frozenset({"math", "reasoning", "coding"})

# "[[8]]", "[[7.5]]", "[[ 8 ]]", "[[8/10]]"; the single-bracket "[8]" is a fallback.
_DOUBLE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]")
_SINGLE = re.compile(r"(?<!\[)\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\](?!\])")
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


# The judge's reply: reasoning first (it conditions the verdict), at most this many characters
# less than the reply's token limit, so that the JSON always closes within it (a token writes at
# least one character) with room for the field names and the rating.
SCHEMA_OVERHEAD_TOKENS = 32


def verdict_schema(field: str, max_tokens: int) -> dict[str, Any]:
    """The JSON schema of a reply {"reasoning": str, field: ...} within max_tokens tokens.

    field: "rating" (an integer 1-10) or "verdict" ("A", "B" or "C" for a tie).
    """
    value = ({"type": "integer", "minimum": 1, "maximum": 10} if field == "rating"
             else {"type": "string", "enum": ["A", "B", "C"]})
    reasoning = {"type": "string", "maxLength": max(max_tokens - SCHEMA_OVERHEAD_TOKENS, 1)}
    return {"type": "object", "properties": {"reasoning": reasoning, field: value},
            "required": ["reasoning", field], "additionalProperties": False}


def _structured(reply: str, field: str) -> tuple[bool, Any]:
    """(whether the reply is a JSON object, its `field` or None)."""
    try:
        data = json.loads(reply)
    except ValueError:
        return False, None
    return isinstance(data, dict), data.get(field) if isinstance(data, dict) else None


def parse_rating(reply: str) -> float | None:
    """The judge's 1-10 rating from its reply, or None when there is none or it is out of range.

    A JSON reply gives its "rating" (a whole number). Otherwise MT-Bench's form: the last
    "[[n]]" wins (judges sometimes quote the format before giving their verdict); a reply with
    no double-bracket rating falls back to the last "[n]".
    """
    is_json, rating = _structured(reply, "rating")
    if is_json:
        ok = isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 10
        return float(rating) if ok else None
    matches = _DOUBLE.findall(reply) or _SINGLE.findall(reply)
    if not matches:
        return None
    value = float(matches[-1])
    return value if 1.0 <= value <= 10.0 else None


def parse_verdict(reply: str) -> str | None:
    """"A", "B" or "tie" from a JSON reply's "verdict" ("C": tie) or else from a reply's last
    "[[A]]", "[[B]]" or "[[C]]"; None when there is none."""
    is_json, verdict = _structured(reply, "verdict")
    if is_json:
        return {"A": "A", "B": "B", "C": "tie"}.get(verdict) if isinstance(verdict, str) else None
    matches = _VERDICT.findall(reply)
    if not matches:
        return None
    last = matches[-1]
    return "tie" if last == "C" else last


def load_template(name: str) -> str:
    """The text of prompts/judge/<name>.txt."""
    path = prompts_dir() / "judge" / f"{name}.txt"
    return path.read_text()


def fill(template: str, **values: str) -> str:
    """Fill a template's {fields}; a missing or unexpected field is a KeyError."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing, extra = fields - set(values), set(values) - fields
    if missing or extra:
        raise KeyError(f"template fields missing {sorted(missing)}, unexpected {sorted(extra)}")
    return template.format(**values)


def needs_reference(category: str, reference: Sequence[str] | None) -> bool:
    return category in REFERENCE_CATEGORIES and bool(reference)


def rating_messages(turns: Sequence[str], answers: Sequence[str], turn: int, category: str = "",
                    reference: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Chat messages asking the judge to rate answer `turn` (1 or 2) of a conversation."""
    with_ref = needs_reference(category, reference) and len(reference or ()) >= turn
    if turn == 1:
        values = {"question": turns[0], "answer": answers[0]}
        if with_ref:
            values["reference"] = reference[0]
        name = "single_ref" if with_ref else "single"
    else:
        values = {"question_1": turns[0], "answer_1": answers[0],
                  "question_2": turns[1], "answer_2": answers[1]}
        if with_ref:
            values.update(reference_1=reference[0], reference_2=reference[1])
        name = "single_turn2_ref" if with_ref else "single_turn2"
    return [{"role": "system", "content": load_template("single_system").strip()},
            {"role": "user", "content": fill(load_template(name), **values)}]


def pair_messages(turns: Sequence[str], answers_a: Sequence[str], answers_b: Sequence[str],
                  turn: int, category: str = "",
                  reference: Sequence[str] | None = None) -> list[dict[str, str]]:
    """Chat messages asking the judge which of two conversations answers turn `turn` better."""
    with_ref = needs_reference(category, reference) and len(reference or ()) >= turn
    if turn == 1:
        values = {"question": turns[0], "answer_a": answers_a[0], "answer_b": answers_b[0]}
        if with_ref:
            values["reference"] = reference[0]
        name = "pair_ref" if with_ref else "pair"
    else:
        values = {"question_1": turns[0], "question_2": turns[1],
                  "answer_a_1": answers_a[0], "answer_a_2": answers_a[1],
                  "answer_b_1": answers_b[0], "answer_b_2": answers_b[1]}
        if with_ref:
            values.update(reference_1=reference[0], reference_2=reference[1])
        name = "pair_turn2_ref" if with_ref else "pair_turn2"
    return [{"role": "system", "content": load_template("pair_system").strip()},
            {"role": "user", "content": fill(load_template(name), **values)}]


@dataclass
class Rating:
    question_id: Any
    turn: int
    score: float | None
    answer_chars: int
    reply: str


@dataclass
class PairGame:
    """One pairwise comparison judged in both orders.

    first: the verdict with the policy's answer shown as A; second: with it shown as B (both in
    the judge's letters). outcome: "win", "loss" or "tie" for the policy, None if unparsable.
    """

    question_id: Any
    turn: int
    first: str | None
    second: str | None
    policy_chars: int
    baseline_chars: int

    @property
    def outcome(self) -> str | None:
        return combine_orders(self.first, self.second)


def combine_orders(first: str | None, second: str | None) -> str | None:
    """Policy outcome from the verdicts with the policy as A (first) and as B (second).

    Both orders must agree for a win or a loss; any disagreement is a tie; an unparsable
    verdict in either order makes the game unparsable (None).
    """
    if first is None or second is None:
        return None
    as_policy = {"A": "win", "B": "loss", "tie": "tie"}[first]
    swapped = {"A": "loss", "B": "win", "tie": "tie"}[second]
    return as_policy if as_policy == swapped else "tie"


class Judge:
    """Asks a served model for ratings and verdicts (greedy, so a run is reproducible)."""

    def __init__(self, client: Any, *, max_tokens: int = 512, model: str | None = None):
        self.client = client
        self.max_tokens = max_tokens
        self.model = model

    def _ask(self, messages: list[dict[str, str]], field: str) -> str:
        completion = self.client.chat(messages, temperature=0.0, max_tokens=self.max_tokens,
                                      seed=0, model=self.model,
                                      json_schema=verdict_schema(field, self.max_tokens))[0]
        return completion.text

    def rate(self, question_id: Any, turns: Sequence[str], answers: Sequence[str], turn: int,
             category: str = "", reference: Sequence[str] | None = None) -> Rating:
        reply = self._ask(rating_messages(turns, answers, turn, category, reference), "rating")
        return Rating(question_id, turn, parse_rating(reply), len(answers[turn - 1]), reply)

    def compare(self, question_id: Any, turns: Sequence[str], policy: Sequence[str],
                baseline: Sequence[str], turn: int, category: str = "",
                reference: Sequence[str] | None = None) -> PairGame:
        first = parse_verdict(self._ask(
            pair_messages(turns, policy, baseline, turn, category, reference), "verdict"))
        second = parse_verdict(self._ask(
            pair_messages(turns, baseline, policy, turn, category, reference), "verdict"))
        return PairGame(question_id, turn, first, second, len(policy[turn - 1]),
                        len(baseline[turn - 1]))


def rating_statistics(ratings: Sequence[Rating]) -> dict[str, Any]:
    """Parsed/unparsable counts and the rating-length correlation (verbosity bias)."""
    parsed = [r for r in ratings if r.score is not None]
    return {
        "ratings": len(ratings),
        "parsed": len(parsed),
        "unparsable": len(ratings) - len(parsed),
        "rating_length_correlation": stats.correlation(
            [float(r.answer_chars) for r in parsed], [r.score for r in parsed]),
    }


def pairwise_statistics(games: Sequence[PairGame]) -> dict[str, Any]:
    """Win rate (ties count half) with position- and length-bias statistics.

    consistency: share of parsed games whose two orders agree. first_position_rate: among
    decisive single verdicts, how often the answer shown first won (0.5 = no position bias).
    longer_wins_rate: among decided games, how often the longer answer won.
    """
    parsed = [g for g in games if g.outcome is not None]
    wins = sum(g.outcome == "win" for g in parsed)
    losses = sum(g.outcome == "loss" for g in parsed)
    ties = len(parsed) - wins - losses
    n = len(parsed)
    scores = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[g.outcome] for g in parsed]
    win_rate, stderr = stats.mean_stderr(scores)
    decisive = [v for g in parsed for v in (g.first, g.second) if v in ("A", "B")]
    decided = [g for g in parsed if g.outcome in ("win", "loss")
               and g.policy_chars != g.baseline_chars]
    longer_wins = sum((g.outcome == "win") == (g.policy_chars > g.baseline_chars)
                      for g in decided)
    consistent = sum(_consistent(g) for g in parsed)
    return {
        "games": len(games), "parsed": n, "unparsable": len(games) - n,
        "wins": wins, "losses": losses, "ties": ties,
        "win_rate": win_rate, "win_rate_stderr": stderr,
        "consistency": consistent / n if n else math.nan,
        "first_position_rate": (sum(v == "A" for v in decisive) / len(decisive)
                                if decisive else math.nan),
        "longer_wins_rate": longer_wins / len(decided) if decided else math.nan,
        "policy_mean_chars": stats.mean([g.policy_chars for g in games]),
        "baseline_mean_chars": stats.mean([g.baseline_chars for g in games]),
    }


def _consistent(game: PairGame) -> bool:
    """Both orders name the same answer (or both call it a tie)."""
    swapped = {"A": "B", "B": "A", "tie": "tie"}
    return game.first is not None and swapped[game.first] == game.second


@dataclass(frozen=True)
class KnownPair:
    """A question with two answers, one clearly better (a judge should prefer it)."""

    question: str
    better: str
    worse: str
    category: str = ""
    reference: str | None = None
    kind: str = ""  # what makes `better` better, e.g. "arithmetic", "off-topic", "truncated"


def load_known_pairs(path: str | Path = KNOWN_PAIRS) -> list[KnownPair]:
    """The pairs of a JSONL file {question, better, worse, category?, reference?, kind?}."""
    pairs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append(KnownPair(**row))
        except (ValueError, TypeError) as err:
            raise UserError(f"{path}, line {number}: not a judge pair ({err})") from None
    return pairs


def pair_agreement(judge: Judge, pairs: Sequence[KnownPair], mode: str,
                   concurrency: int = 8) -> dict[str, Any]:
    """How often the judge prefers the better answer of each known pair, judged as the task
    judges: "single" rates both answers (higher wins, equal is half), "pairwise" compares
    them in both orders (a win, a tie is half). A pair the judge fails on (unparsable or a
    request error) counts as a miss; 0.5 is what a guessing judge gets.

    Returns:
        {"judge_agreement": share in [0, 1], "judge_agreement_n": pairs judged,
         "judge_agreement_failed": pairs without a usable verdict}.
    """

    def one(index: int) -> float | None:
        pair = pairs[index]
        reference = [pair.reference] if pair.reference else None
        try:
            if mode == "pairwise":
                game = judge.compare(f"known-{index}", [pair.question], [pair.better],
                                     [pair.worse], 1, pair.category, reference)
                return {"win": 1.0, "tie": 0.5, "loss": 0.0, None: None}[game.outcome]
            better, worse = (judge.rate(f"known-{index}", [pair.question], [answer], 1,
                                        pair.category, reference).score
                             for answer in (pair.better, pair.worse))
        except Exception:  # noqa: BLE001 - a failed judge request is a miss, not fatal
            return None
        if better is None or worse is None:
            return None
        return 1.0 if better > worse else 0.5 if better == worse else 0.0

    scores = parallel_map(one, list(range(len(pairs))), concurrency, label="judging",
                          unit="pairs")
    failed = sum(s is None for s in scores)
    return {"judge_agreement": stats.mean([s or 0.0 for s in scores]),
            "judge_agreement_n": len(pairs), "judge_agreement_failed": failed}


def unreliable_reason(parse_rate: float, agreement: float, min_parse_rate: float = MIN_PARSE_RATE,
                      min_agreement: float = MIN_AGREEMENT) -> str | None:
    """Why the judge's scores cannot be a fitness (parse rate or agreement below its
    threshold), or None when they can."""
    reasons = []
    if not parse_rate >= min_parse_rate:
        reasons.append(f"the judge's parse rate {format_rate(parse_rate)} is below "
                       f"{min_parse_rate:g}")
    if not agreement >= min_agreement:
        reasons.append(f"its agreement on answer pairs of known quality "
                       f"{format_rate(agreement)} is "
                       f"below {min_agreement:g} (0.5 is guessing)")
    return "; ".join(reasons) or None

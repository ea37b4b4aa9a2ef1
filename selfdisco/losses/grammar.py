"""The primitives grammar: an open space of losses in which every sentence trains.

A loss is a positive-weighted sum of one to three terms, each a weight times one or two factors,
three factors at most in all; a factor is softplus, exp, sigmoid, relu, square or abs (optionally
inside log1p) of a shifted, negated margin; a margin is a positive-weighted linear form of
x = beta * rho or of the chosen and rejected log-ratios separately, optionally inside tanh, or
two such joined by min, max or a sum.

Why every sentence screens: each margin is zero at zero and rises with the chosen log-prob and
falls with the rejected one, and each factor is positive and strictly falling in its margin where
margins are negative (shifts in relu, square and abs are >= 0). So wherever the chosen log-ratio
is negative and the rejected one positive, the loss falls strictly as the chosen log-prob rises
and the rejected one falls: both policy inputs get gradients and the loss is not constant. Numbers
lie in [0.1, 4.9] and the nesting is bounded, so values stay finite on ordinary inputs. The
grammar has no recursion: its language is finite; the longest code is 765 characters, and the
longest answer about 375 SmolLM2 tokens (under the cpu preset's max_tokens of 384).

One table (RULES) is the source of truth: `lark` renders it for the server (vLLM's guidance
back-end, the whole JSON answer) and `matches` checks code against it here, without trusting
the server.
"""

from __future__ import annotations

import json
import re

NAME = "primitives"
HEADER = ("def loss_fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, "
          "reference_rejected_logps, beta):\n"
          "    chosen = beta * (policy_chosen_logps - reference_chosen_logps)\n"
          "    rejected = beta * (policy_rejected_logps - reference_rejected_logps)\n"
          "    x = chosen - rejected\n"
          "    return ")
NUMBER = r"0\.[1-9]|[1-4]\.[0-9]"  # every weight, scale and shift: 0.1 to 4.9
THOUGHT = r'[^"\\\x00-\x1f]{1,200}'  # small models ramble: short, no control characters
ANSWER_NAME = r"[a-z][a-z0-9_]{2,39}"


# A reference is "<rule>"; "<n>" is a number; anything else is literal text.
RULES: dict[str, list[tuple[str, ...]]] = {
    "code": [(HEADER, "<loss>", "\n")],
    # one to three terms, three factors at most in all
    "loss": [("<term>",), ("<product>",), ("<term>", " + ", "<term>"),
             ("<term>", " + ", "<product>"), ("<product>", " + ", "<term>"),
             ("<term>", " + ", "<term>", " + ", "<term>")],
    "term": [("<n>", " * ", "<factor>")],
    "product": [("<n>", " * ", "<factor>", " * ", "<factor>")],
    "factor": [("<base>",), ("torch.log1p(", "<base>", ")")],
    "base": ([(f, "<shift>", ")") for f in ("F.softplus(", "torch.exp(", "torch.sigmoid(")]
             + [(f, "<shift0>", ")") for f in ("torch.relu(", "torch.square(", "torch.abs(")]),
    "shift": [("-", "<margin>"), ("<n>", " - ", "<margin>"), ("-", "<n>", " - ", "<margin>")],
    "shift0": [("-", "<margin>"), ("<n>", " - ", "<margin>")],
    "margin": [("<inner>",)] + [(join, "<inner>", ", ", "<inner>", ")")
                                 for join in ("torch.minimum(", "torch.maximum(")]
              + [("(", "<inner>", " + ", "<inner>", ")")],
    "inner": [("<lin>",), ("<n>", " * torch.tanh(", "<lin>", ")")],
    "lin": [("<n>", " * x"), ("(", "<n>", " * chosen - ", "<n>", " * rejected)")],
}


def reference(item: str) -> str | None:
    """The rule an item names, or None for literal text."""
    return item[1:-1] if item.startswith("<") and item.endswith(">") else None


def lark(json_answer: bool = True) -> str:
    """The grammar in Lark syntax (llguidance's dialect); with json_answer, for the whole answer
    {"thought", "name", "code"} with the code's newlines escaped as in a JSON string."""
    def text(item: str) -> str:
        name = reference(item)
        if name == "n":
            return "NUMBER"
        if name is not None:
            return name
        literal = json.dumps(item)[1:-1] if json_answer else item
        return json.dumps(literal)

    lines = []
    if json_answer:
        lines.append('start: "{\\"thought\\": \\"" THOUGHT "\\", \\"name\\": \\"" NAME '
                     '"\\", \\"code\\": \\"" code "\\"}"')
    else:
        lines.append("start: code")
    for rule, alternatives in RULES.items():
        options = [" ".join(text(item) for item in alt) for alt in alternatives]
        lines.append(f"{rule}: " + "\n    | ".join(options))
    lines.append(f"NUMBER: /{NUMBER}/")
    if json_answer:
        lines.append(f"THOUGHT: /{THOUGHT}/")
        lines.append(f"NAME: /{ANSWER_NAME}/")
    return "\n".join(lines) + "\n"


_NUMBER = re.compile(NUMBER)


class _Matcher:
    """Every way `text` can match a rule from a position: the set of end positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.furthest = 0  # the furthest position any literal or number reached
        self.memo: dict[tuple[str, int], frozenset[int]] = {}

    def ends(self, rule: str, start: int) -> frozenset[int]:
        if (rule, start) in self.memo:
            return self.memo[rule, start]
        found: set[int] = set()
        for alternative in RULES[rule]:
            positions = {start}
            for item in alternative:
                positions = {end for pos in positions for end in self.item_ends(item, pos)}
                if not positions:
                    break
            found |= positions
        self.memo[rule, start] = frozenset(found)
        return self.memo[rule, start]

    def item_ends(self, item: str, pos: int) -> set[int]:
        name = reference(item)
        if name == "n":
            match = _NUMBER.match(self.text, pos)
            ends = {match.end()} if match else set()
        elif name is not None:
            return set(self.ends(name, pos))
        else:
            ends = {pos + len(item)} if self.text.startswith(item, pos) else set()
        if ends:
            self.furthest = max(self.furthest, *ends)
        return ends


def mismatch(code: str) -> str | None:
    """None when `code` is a sentence of the grammar; else where and how it departs from it."""
    matcher = _Matcher(code)
    if len(code) in matcher.ends("code", 0):
        return None
    at = matcher.furthest
    line = code.count("\n", 0, at) + 1
    column = at - (code.rfind("\n", 0, at) + 1) + 1
    if not code.startswith(HEADER):
        return ("the code must start with the fixed header (the signature and the chosen, "
                "rejected and x lines, then `return `)")
    return (f"line {line}, column {column}: {code[at:at + 30]!r} does not fit the grammar "
            "(numbers 0.1 to 4.9 with one decimal, the listed functions only, one return line)")


def matches(code: str) -> bool:
    """Whether `code` is a sentence of the grammar."""
    return mismatch(code) is None

"""Pull a {thought, name, code} candidate out of an LLM's answer, whatever wraps it.

Handles code fences, prose before or after the object, raw newlines inside strings, single
quotes, trailing commas, a missing "name" or "thought", and code given as a separate fenced
block. Anything else becomes a ParseError whose message tells the LLM what to fix. Under a code
grammar, the code is re-checked against it here: the server's enforcement is not trusted.
"""

from __future__ import annotations

import ast
import json
import re

from selfdisco.losses import grammar as primitives
from selfdisco.losses.candidate import Candidate

FORMAT = ('one JSON object with the keys "thought" (your reasoning), "name" (a snake_case name '
          'you choose for the loss) and "code" (one Python function as a string, newlines '
          'escaped as \\n)')
FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
DEF_NAME = re.compile(r"^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", re.MULTILINE)
KEY = re.compile(r"""["'](thought|name|code)["']\s*:\s*""")
MAX_NAME = 64
# Names copied from a template instead of naming the loss ("your_name"): taken as no name.
PLACEHOLDER = re.compile(r"(^|_)(your|placeholder|example|snake_case)(_|$)|"
                         r"^(name|loss_name|name_here|new_loss|my_loss)$")
CODE_GRAMMARS = ("free", primitives.NAME)  # free: any code, checked later by the static check


class ParseError(ValueError):
    """The answer holds no usable candidate; str(err) says what to fix, for the LLM."""


def parse_candidate(text: str, grammar: str = "free") -> Candidate:
    """The candidate in `text`, or ParseError with a message meant to be sent back to the LLM.

    Args:
        text: the LLM's answer.
        grammar: a name from CODE_GRAMMARS; under "primitives" the code must be a sentence of
            losses/grammar.py.
    """
    if grammar not in CODE_GRAMMARS:
        raise ValueError(f"unknown code grammar {grammar!r}; choose one of {CODE_GRAMMARS}")
    candidate = _parse(text)
    if grammar == primitives.NAME:
        problem = primitives.mismatch(candidate.code)
        if problem:
            raise ParseError(f"The code does not follow this run's primitives grammar: "
                             f"{problem}. Write it in the required form.")
    return candidate


def _parse(text: str) -> Candidate:
    if not isinstance(text, str) or not text.strip():
        raise ParseError(f"The answer was empty. Reply with {FORMAT}.")
    spans = _object_spans(text)
    data, problem = None, None
    for start, end in spans:
        decoded, error = _decode(text[start:end])
        if isinstance(decoded, dict) and not set(decoded) & {"thought", "name", "code"}:
            continue  # some other braces, e.g. a dict inside the code
        if isinstance(decoded, dict) and decoded.get("code"):
            data, rest = decoded, text[:start] + text[end:]
            break
        if isinstance(decoded, dict) and data is None:
            data, rest = decoded, text[:start] + text[end:]
        problem = problem or error
    if data is None:
        code = _fenced_code(text)
        if code:
            return _candidate({"thought": _prose(text)}, code)
        if problem:
            raise ParseError(f"The JSON object could not be parsed ({problem}). Reply with "
                             f"{FORMAT}; escape quotes inside strings as \\\".")
        raise ParseError(f"No JSON object was found in the answer. Reply with {FORMAT}.")
    code = data.get("code")
    if isinstance(code, list) and all(isinstance(line, str) for line in code):
        code = "\n".join(code)
    if not code:
        code = _fenced_code(rest)
    if not code:
        raise ParseError('The JSON object has no "code" key (or it is empty). Add "code": a '
                         "string holding one Python function of (policy_chosen_logps, "
                         "policy_rejected_logps, reference_chosen_logps, "
                         f"reference_rejected_logps, beta) that returns per-example losses: "
                         f"{FORMAT}.")
    if not isinstance(code, str):
        raise ParseError(f'"code" must be a string holding the function; got a '
                         f"{type(code).__name__}. Reply with {FORMAT}.")
    return _candidate(data, code)


def _candidate(data: dict, code: str) -> Candidate:
    code = _strip_fences(code)
    thought = data.get("thought")
    thought = "" if thought is None else str(thought).strip()
    return Candidate(thought=thought, name=_name(data.get("name"), code), code=code)


def _name(raw, code: str) -> str:
    """A snake_case name: the given one cleaned, else (none, or a placeholder) the function's."""
    if isinstance(raw, str) and raw.strip():
        text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", raw.strip())
        name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:MAX_NAME].strip("_")
        if name and not PLACEHOLDER.search(name):
            return name
    match = DEF_NAME.search(code)
    return match.group(1).lower()[:MAX_NAME] if match else "candidate"


def _strip_fences(code: str) -> str:
    match = FENCE.search(code)
    if match and code.lstrip().startswith("```"):
        code = match.group(2)
    return code.strip("\n").rstrip() + "\n"


def _fenced_code(text: str) -> str | None:
    """The first fenced block that holds a function definition."""
    for match in FENCE.finditer(text):
        if DEF_NAME.search(match.group(2)):
            return match.group(2)
    return None


def _prose(text: str) -> str:
    return FENCE.sub(" ", text).strip()[:4000]


def _object_spans(text: str) -> list[tuple[int, int]]:
    """Outermost {...} spans, skipping braces inside quoted strings."""
    spans, depth, start, quote, i = [], 0, 0, None, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif depth and char in "\"'":
            quote = char
        elif char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append((start, i + 1))
        i += 1
    if depth:  # unbalanced: try from the last top-level opening brace to the end
        spans.append((start, len(text)))
    return spans


def _decode(span: str) -> tuple[object | None, str | None]:
    """Decode one object span; returns (value, None) or (None, the JSON error)."""
    try:
        return json.loads(span, strict=False), None
    except json.JSONDecodeError as err:
        error = f"{err.msg}: line {err.lineno}, column {err.colno}"
    no_trailing = re.sub(r",(\s*[}\]])", r"\1", span)
    try:
        return json.loads(no_trailing, strict=False), None
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(span)
        if isinstance(value, dict):
            return value, None
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        pass
    sliced = _slice_keys(span)
    return (sliced, None) if sliced else (None, error)


def _slice_keys(span: str) -> dict | None:
    """Last resort for strings with unescaped quotes: cut each value between known keys."""
    found = {}
    for match in KEY.finditer(span):
        found.setdefault(match.group(1), match)
    if "code" not in found:
        return None
    ordered = sorted(found.values(), key=lambda m: m.start())
    data = {}
    for index, match in enumerate(ordered):
        end = ordered[index + 1].start() if index + 1 < len(ordered) else span.rfind("}")
        raw = span[match.end():end].strip().rstrip(",").strip()
        if len(raw) < 2 or raw[0] not in "\"'" or raw[-1] != raw[0]:
            return None
        data[match.group(1)] = _unescape(raw[1:-1])
    return data


def _unescape(text: str) -> str:
    table = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "'": "'",
             "\\": "\\", "/": "/"}

    def replace(match: re.Match) -> str:
        escape = match.group(1)
        if escape.startswith("u"):
            return chr(int(escape[1:], 16))
        return table[escape]

    return re.sub(r"\\(u[0-9a-fA-F]{4}|[ntrbf\"'\\/])", replace, text)


def parse_answer(text: str, grammar: str = "free"):
    """A proposer's answer as a Candidate (its code re-checked against the run's code grammar);
    ValueError with the reason otherwise."""
    try:
        return parse_candidate(text, grammar)
    except ParseError as err:
        raise ValueError(str(err)) from None

"""The proposer's side of discovery: prompts from prompts/, the answer format, the history.

The proposer sees a system prompt, then one user message listing the burn-in losses with their
measured fitness, then for each evaluated candidate its answer and the feedback (the paper's
"Fitness: ..." messages). When that history outgrows the context budget, the best and the most
recent entries are kept and the prompt says how many were left out.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from selfdisco.formatting import format_fitness
from selfdisco.losses import grammar as primitives
from selfdisco.rundir.events import REJECTED, SCORED
from selfdisco.rundir.paths import prompts_dir

NOT_MEASURED = "not measured"  # the fitness the proposer sees for a baseline that did not score


def load_prompt(name: str) -> string.Template:
    """A template from prompts/<name>.txt, filled with $placeholders."""
    return string.Template((prompts_dir() / f"{name}.txt").read_text())


def candidate_schema() -> dict:
    """The JSON schema vLLM enforces on a free-form proposer answer."""
    return {
        "type": "object",
        "properties": {
            "thought": {"type": "string", "minLength": 1, "maxLength": 1200},
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9_]{2,39}$"},
            "code": {"type": "string", "minLength": 20, "maxLength": 4000},
        },
        "required": ["thought", "name", "code"],
        "additionalProperties": False,
    }


def answer_format(grammar: str) -> dict:
    """The proposer request's structured-output option for a code grammar: the JSON schema
    (free), or the Lark grammar of the whole answer (primitives, see losses/grammar.py)."""
    if grammar == primitives.NAME:
        return {"grammar": primitives.lark()}
    return {"json_schema": candidate_schema()}


def system_prompt(task_description: str, beta: float, grammar: str, folder: str = "") -> str:
    """The system prompt: prompts/propose_system.txt, or a task's own in prompts/<folder>/."""
    notes = load_prompt(f"propose_grammar_{grammar}").template if grammar != "free" else ""
    name = f"{folder}/propose_system" if folder else "propose_system"
    return load_prompt(name).substitute(
        task_description=task_description, beta=beta, grammar_notes=notes)


@dataclass
class Entry:
    """One evaluated candidate as the proposer sees it."""

    order: int
    answer: str  # the candidate as JSON text
    feedback: str  # "Fitness: ..." or the error
    fitness: float | None


def estimate_tokens(text: str) -> int:
    """A cheap, tokenizer-free estimate (about 3.5 characters per token for code and prose)."""
    return int(len(text) / 3.5) + 1


def select_history(entries: list[Entry], budget: int, keep_best: int,
                   keep_recent: int) -> tuple[list[Entry], int]:
    """All entries if they fit the budget, else the best and the most recent; (kept, omitted)."""
    cost = sum(estimate_tokens(e.answer) + estimate_tokens(e.feedback) for e in entries)
    if cost <= budget:
        return entries, 0
    ranked = sorted((e for e in entries if e.fitness is not None), key=lambda e: -e.fitness)
    keep = {e.order for e in ranked[:keep_best]} | {e.order for e in entries[-keep_recent:]}
    kept = [e for e in entries if e.order in keep]
    return kept, len(entries) - len(kept)


def build_messages(system: str, burn_in: str, entries: list[Entry], *, budget: int,
                   keep_best: int, keep_recent: int) -> list[dict]:
    """The proposer's conversation for the next answer."""
    kept, omitted = select_history(entries, budget, keep_best, keep_recent)
    first = burn_in
    if omitted:
        note = load_prompt("context_trimmed").substitute(omitted=omitted, kept=len(kept))
        first = f"{burn_in}\n\n{note}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": first}]
    for entry in kept:
        messages.append({"role": "assistant", "content": entry.answer})
        messages.append({"role": "user", "content": entry.feedback})
    return messages


def burn_in_message(rows: list[dict]) -> str:
    """rows: name, full_name, fitness (float or None), code."""
    entry = load_prompt("propose_burn_in_entry")
    parts = [entry.substitute(name=r["name"], full_name=r.get("full_name") or r["name"],
                              fitness=format_fitness(r.get("fitness"), missing=NOT_MEASURED),
                              code=r["code"].strip())
             for r in rows]
    return load_prompt("propose_burn_in").substitute(entries="\n\n".join(parts))


def feedback(status: str, fitness: float | None = None, reason: str | None = None,
             cause: str | None = None) -> str:
    """The paper's message after an attempt: fitness, invalid code, failed training, or (cause
    "stopped") not trained fully after a short training (search/fidelity.py)."""
    if cause == "stopped":
        return load_prompt("feedback_stopped").substitute(reason=reason or "").strip()
    if status == SCORED:
        return load_prompt("feedback_fitness").substitute(
            fitness=format_fitness(fitness, missing=NOT_MEASURED))
    if status == REJECTED:
        return load_prompt("feedback_invalid").substitute(reason=reason or "unknown").strip()
    return load_prompt("feedback_failed").substitute(reason=reason or status).strip()

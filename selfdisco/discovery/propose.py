"""A generation's proposals: ask the proposer, screen each answer, record it proposed or rejected.

Each of the generation's K slots gets one answer; an answer that does not parse, fails the
screen or behaves the same as a loss already seen (compared where the burn-in's training went,
the run's reach: losses/fingerprint.py) is recorded as rejected, and its slot is asked again
with the reason, up to max_resamples times. A proposal named like a catalog loss or
an earlier candidate it does not behave like is renamed (losses/names.py). prompt.py writes
the proposer's messages from prompts/; this module asks and records (loop: the running
loop, as interface.Loop). A resumed run asks only for the slots still open.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selfdisco.discovery import prompt
from selfdisco.discovery.evaluation import code_sha
from selfdisco.discovery.interface import Loop
from selfdisco.discovery.proposer import selftrain
from selfdisco.discovery.search import population
from selfdisco.errors import UserError
from selfdisco.llm.client import LLMUnavailable
from selfdisco.llm.server import ServerError
from selfdisco.losses.names import honest_name
from selfdisco.rundir.archive import Row
from selfdisco.rundir.events import EVALUATED, PROPOSED, REJECTED, SCORED
from selfdisco.seeds import derive


class ProposerUnavailable(UserError):
    """The proposer's server is gone for good; the run stops and can be resumed."""


def propose_generation(loop: Loop, g: int) -> None:
    """Fill generation g's slots: one answer each, then rounds of resamples for the rejected."""
    k, max_attempts = loop.settings.candidates_per_generation, loop.settings.max_resamples + 1
    rows = loop.archive.rows("generation = ? AND kind = 'proposal'", (g,))
    slots: dict[int, list[Row]] = {s: [r for r in rows if r.slot == s] for s in range(k)}

    def open_slots() -> list[int]:
        return [s for s, tried in slots.items()
                if not any(r.status != REJECTED for r in tried)
                and len(tried) < max_attempts]

    base_messages = context(loop)
    contexts = population.slot_contexts(loop, g, base_messages)  # slot -> its messages
    selftrain.save_context(loop.run_dir, f"g{g:02d}", contexts)
    fresh = [s for s in open_slots() if not slots[s]]
    for group in population.same_context(contexts, fresh):
        texts = ask(loop, contexts[group[0]], len(group),
                    derive(loop.config.seed, "propose", g), loop.state.proposer_adapter)
        for slot, text in zip(group, texts, strict=True):
            slots[slot].append(_screen_answer(loop, g, slot, 0, text))
    while True:
        if loop.checkpoint():
            return
        todo = open_slots()
        if not todo:
            return
        asks = []
        for slot in todo:
            last = slots[slot][-1]
            attempt = len(slots[slot])
            resample = contexts[slot] + [
                {"role": "assistant", "content": last.raw_text or ""},
                {"role": "user", "content": prompt.feedback(REJECTED, reason=last.reason)}]
            asks.append((slot, attempt, resample,
                         derive(loop.config.seed, "propose", g, slot, attempt)))
        # The slots' resamples go out together (the server batches them); their answers
        # are screened in slot order, so decisions do not depend on which returns first.
        with ThreadPoolExecutor(len(asks)) as pool:
            texts = list(pool.map(
                lambda a: ask(loop, a[2], 1, a[3], loop.state.proposer_adapter)[0], asks))
        for (slot, attempt, _, _), text in zip(asks, texts, strict=True):
            slots[slot].append(_screen_answer(loop, g, slot, attempt, text))


def context(loop: Loop, shown: list[Row] | None = None) -> list[dict]:
    """The proposer's context with `shown` proposals (default: every one) as history."""
    services, settings = loop.services, loop.settings
    system = prompt.system_prompt(services.task_description, services.beta,
                                  settings.code_grammar, services.prompts)
    burn = [{"name": r.name, "full_name": r.thought, "code": r.code,
             "fitness": r.fitness if r.status == SCORED else None}
            for r in loop.archive.rows("kind = 'burn_in'")]
    entries = []
    for row in loop.archive.rows("kind = 'proposal'") if shown is None else shown:
        if row.status not in EVALUATED:
            continue
        answer = json.dumps({"thought": row.thought, "name": row.name, "code": row.code})
        entries.append(prompt.Entry(order=row.seq, answer=answer,
                                     feedback=prompt.feedback(row.status, row.fitness,
                                                               row.reason,
                                                               row.metrics.get("cause")),
                                     fitness=row.fitness if row.status == SCORED else None))
    return prompt.build_messages(system, prompt.burn_in_message(burn), entries,
                                 budget=settings.context_tokens, keep_best=settings.keep_best,
                                 keep_recent=settings.keep_recent)


def ask(loop: Loop, messages: list[dict], n: int, seed: int, model: str | None) -> list[str]:
    """n answers of the proposer served as `model` (None: the base model). A refused request
    counts as empty answers (and in loop.requests); a proposer that cannot answer at all
    (server down after its restarts) ends the run, to resume."""
    loop.requests.sent += 1
    try:
        answers = loop.services.proposer.chat(
            messages, n=n, temperature=loop.settings.temperature, top_p=loop.settings.top_p,
            max_tokens=loop.settings.max_tokens, seed=seed,
            **prompt.answer_format(loop.settings.code_grammar),
            model=model)
    except (LLMUnavailable, ServerError) as err:
        loop.events.emit("log", level="error", message=f"the proposer is unavailable: {err}")
        raise ProposerUnavailable(
            f"the proposer could not answer ({str(err).splitlines()[0]}); nothing recorded "
            f"is lost: fix the server, then run `selfdisco resume {loop.run_dir}`") from None
    except Exception as err:  # noqa: BLE001 - a refused request is a rejected proposal
        loop.events.emit("log", level="error", message=f"proposer request failed: {err}")
        loop.requests.failed += 1
        loop.requests.last_error = str(err).splitlines()[0] if str(err) else type(err).__name__
        return [""] * n
    texts = [a.text for a in answers]
    return texts + [""] * (n - len(texts))


def _screen_answer(loop: Loop, g: int, slot: int, attempt: int, text: str) -> Row:
    """Parse, screen and de-duplicate one answer; record itd or rejected."""
    id = f"g{g:02d}-c{slot + 1}" + (f"-r{attempt}" if attempt else "")
    seeds = {"propose": derive(loop.config.seed, "propose", g, *(
        (slot, attempt) if attempt else ()))}
    common = {"slot": slot, "attempt": attempt, "raw_text": text[:20000],
              "proposer": loop.state.proposer_id, "seeds": seeds}
    try:
        candidate = loop.services.parse(text)
    except ValueError as err:
        return _reject(loop, id, g, "parse", str(err) or "the answer could not be parsed",
                       common, name=None)
    common.update(name=candidate.name, thought=candidate.thought, code=candidate.code,
                  code_sha=code_sha(candidate.code))
    result = loop.services.screen(candidate, timeout_s=loop.settings.screen_timeout_s,
                                  beta=loop.services.beta)
    if not result.ok:
        return _reject(loop, id, g, "screen", result.reason, common)
    reach = loop.archive.reach()
    for other_id, fingerprint in loop.state.fingerprints.items():
        if result.fingerprint.is_duplicate(fingerprint, loop.settings.duplicate_tolerance,
                                           within=reach):
            other = loop.archive.get(other_id)
            reason = (f"it behaves the same as {other.name} ({other_id}), which was already "
                      "evaluated; propose a loss with a different shape")
            return _reject(loop, id, g, "duplicate", reason, common,
                           fingerprint=result.fingerprint.to_dict(),
                           shape=result.shape.to_dict())
    name, why = _honest_name(loop, candidate.name, result.fingerprint, reach)
    if why:
        common.update(name=name, proposed_name=candidate.name, rename_reason=why)
    row = loop.archive.add(id, g, "proposal", PROPOSED,
                           fingerprint=result.fingerprint.to_dict(),
                           shape=result.shape.to_dict(), **common)
    loop.state.fingerprints[id] = result.fingerprint
    loop.events.emit("candidate_proposed", id=id, generation=g, name=name,
                     thought=candidate.thought, code=candidate.code,
                     proposer=loop.state.proposer_id, attempt=attempt)
    if why:
        loop.events.emit("log", level="info", message=f"{id} renamed: {why}")
    return row


def _honest_name(loop: Loop, name: str, fingerprint, reach) -> tuple[str, str | None]:
    """The name to show (a catalog loss's or an earlier candidate's only if it behaves the
    same, within the run's reach when it has one) and, when it is not the proposer's, why
    (losses/names.py)."""
    earlier = [(r.id, r.name) for r in map(loop.archive.get, loop.state.fingerprints)
               if r is not None and r.name]

    def catalog_fingerprint(loss: str):
        found = _catalog_fingerprint(loop, loss)
        return found.restricted(reach) if found is not None and reach is not None else found

    mine = fingerprint.restricted(reach) if reach is not None else fingerprint
    return honest_name(name, mine, earlier, catalog_fingerprint,
                       loop.settings.duplicate_tolerance)


def _catalog_fingerprint(loop: Loop, name: str):
    """A catalog loss's fingerprint: its burn-in row's, or screened once on demand."""
    if f"burn-{name}" in loop.state.fingerprints:
        return loop.state.fingerprints[f"burn-{name}"]
    if name not in loop.state.catalog_fingerprints:
        result = loop.screen(name, loop.services.catalog(name)["code"])
        loop.state.catalog_fingerprints[name] = result.fingerprint if result.ok else None
    return loop.state.catalog_fingerprints[name]


def _reject(loop: Loop, id: str, g: int, stage: str, reason: str, common: dict,
            **fields: Any) -> Row:
    reason = " ".join(str(reason).split())[:500]
    row = loop.archive.add(id, g, "proposal", REJECTED, stage=stage, reason=reason,
                           **{**common, **fields})
    loop.events.emit("candidate_proposed", id=id, generation=g, name=row.name or "",
                     thought=row.thought or "", code=row.code or "",
                     proposer=loop.state.proposer_id, attempt=row.attempt)
    loop.events.emit("candidate_rejected", id=id, stage=stage, reason=reason)
    return row

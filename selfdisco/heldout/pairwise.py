"""Pairwise win rate of each loss's policy against the reference policy, AlpacaEval style.

The policy (base + the adapter trained under a loss) and the reference policy (the base model)
answer the same held-out instructions (selfdisco/data/heldout_prompts.jsonl, or a Hub prompt
set by name); an open judge compares the two answers in both orders (selfdisco.tasks.judge, its
verdict constrained to JSON by the server). Each order is one comparison, scored 1 (policy
wins), 0.5 (tie) or 0; the raw win rate is their mean, its standard error over prompts. Judges
favour longer answers, so, as AlpacaEval 2 does, a logistic regression of the outcome on the
standardised length difference gives the length-controlled win rate: the predicted win rate at
zero length difference; its standard error comes from a seeded bootstrap over prompts.

The judge is never the policy's base model unless the option allow_self_judge is on; then the
metrics and the report say so first. The metrics and the report also say whether the search saw
the prompts (prompt_source_note): only when the run's task reads the same file or data set.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.formatting import format_rate
from selfdisco.heldout import Point, session
from selfdisco.heldout.winrate import summarise
from selfdisco.llm.endpoint import open_llm
from selfdisco.llm.models import resolve_model
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import HELDOUT_DONE, HELDOUT_FAILED, SCORED
from selfdisco.rundir.paths import DATA_DIR
from selfdisco.tasks import TaskContext, get_task, run_train_settings
from selfdisco.tasks.judge import (
    Judge,
    PairGame,
    load_known_pairs,
    pair_agreement,
    unreliable_reason,
)
from selfdisco.tasks.sampling import parallel_map, served_adapter

SHIPPED_PROMPTS = DATA_DIR / "heldout_prompts.jsonl"
SELF_JUDGE_OPT_IN = "--option allow_self_judge=true"


@dataclass(frozen=True)
class PairwiseSettings:
    """The pairwise protocol's options (`selfdisco heldout --option KEY=VALUE`)."""

    prompts: str = str(SHIPPED_PROMPTS)
    """Held-out instructions: a .jsonl file ({id, instruction}) or a Hub dataset id."""
    max_prompts: int = 0
    """Use only the first N prompts (0: all)."""
    answer_tokens: int = 128
    """Longest answer of the policy and of the reference, in tokens."""
    judge_tokens: int = 128
    """Longest judge reply, in tokens."""
    judge: str = ""
    """A running vLLM server with the judge (http://HOST:PORT/v1); empty: the policy's server."""
    judge_model: str = ""
    """The judge's model name on its server (empty: the server's first model)."""
    allow_self_judge: bool = False
    """Let the policy's own base model judge (it favours its own style; refused otherwise)."""
    concurrency: int = 8
    """Requests in flight."""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> PairwiseSettings:
        """The settings with the options this protocol knows (others are left to other
        protocols); UserError for a value of the wrong type."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in options:
                continue
            raw = options[f.name]
            values[f.name] = _convert(f.name, raw, type(getattr(cls(), f.name)))
        return cls(**values)


def _convert(name: str, raw: Any, kind: type) -> Any:
    text = str(raw).strip()
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise UserError(f"option {name}={raw!r}: give true or false")
        return text.lower() in ("true", "1")
    if kind is int:
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"option {name}={raw!r}: give a whole number") from None
        if value < 0:
            raise UserError(f"option {name}={raw!r}: must not be negative")
        return value
    return text


@dataclass(frozen=True)
class Prompt:
    id: str
    instruction: str


def load_prompts(source: str) -> list[Prompt]:
    """Instructions from a local .jsonl file ({id?, instruction}) or a Hub dataset id (its
    first split's "instruction" or "prompt" column); UserError when unreadable."""
    path = Path(source).expanduser()
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise UserError(f"prompt file not found: {path}")
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise UserError(f"{path}, line {number}: not JSON ({err.msg})") from None
        where = str(path)
    else:
        rows, where = _hub_rows(source), f"dataset {source!r}"
    prompts = []
    for number, row in enumerate(rows, 1):
        text = row.get("instruction", row.get("prompt")) if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{where}, prompt {number}: needs a non-empty 'instruction' string")
        prompts.append(Prompt(str(row.get("id", number)), text))
    if not prompts:
        raise UserError(f"{where} holds no prompts")
    return prompts


def _hub_rows(source: str) -> list[dict]:
    try:
        # lazy: loads datasets
        import datasets

        loaded = datasets.load_dataset(source)
        split = next(iter(loaded))
        return list(loaded[split])
    except Exception as err:  # noqa: BLE001 - any loading failure is reported to the user
        raise UserError(f"could not load the prompt set {source!r} ({type(err).__name__}: "
                        f"{str(err)[:300]}); give a local .jsonl file, or the shipped set by "
                        "leaving the prompts option out") from None


def answer_prompts(client: Any, prompts: list[Prompt], model: str | None,
                   settings: PairwiseSettings, seed: int) -> list[str]:
    """One answer per prompt; prompt i is sampled with seed + i, the same for every policy."""

    def one(index: int) -> str:
        messages = [{"role": "user", "content": prompts[index].instruction}]
        return client.chat(messages, temperature=0.7, max_tokens=settings.answer_tokens,
                           seed=seed + index, model=model)[0].text

    return parallel_map(one, list(range(len(prompts))), settings.concurrency)


def judge_games(judge: Judge, prompts: list[Prompt], policy: list[str], reference: list[str],
                concurrency: int = 8) -> list[PairGame]:
    """Each prompt's two answers judged in both orders (a failed request is unparsable)."""

    def one(index: int) -> PairGame:
        try:
            return judge.compare(prompts[index].id, [prompts[index].instruction],
                                 [policy[index]], [reference[index]], 1)
        except Exception:  # noqa: BLE001 - a failed judge request is counted, not fatal
            return PairGame(prompts[index].id, 1, None, None, len(policy[index]),
                            len(reference[index]))

    return parallel_map(one, list(range(len(prompts))), concurrency)



# The protocol (selfdisco.heldout): one point per loss, at the run's beta with the first fresh
# seed; the reference's answers are sampled once per command.

def points(ctx: Any) -> list[Any]:
    beta = run_train_settings(ctx.config).beta
    return [Point("pairwise", loss.id, beta, ctx.seeds[0]) for loss in ctx.losses]


def run(ctx: Any) -> None:
    settings = PairwiseSettings.from_options(ctx.options)
    todo = [point for point in points(ctx) if not ctx.done(point)]
    if not todo:
        return
    prompts = load_prompts(settings.prompts)[:settings.max_prompts or None]
    judge_endpoint, judge_name, note = open_judge(ctx.config, settings)
    try:
        client = ctx.policy()
        judge = Judge(judge_endpoint.client if judge_endpoint else client,
                      max_tokens=settings.judge_tokens)
        _say(ctx, "pairwise: the judge compares answer pairs of known quality (agreement)")
        agreement = pair_agreement(judge, load_known_pairs(), "pairwise", settings.concurrency)
        seen = seen_by_search(ctx.config, settings.prompts)
        source = prompt_source_note(ctx.config, settings.prompts, len(prompts), seen)
        _say(ctx, f"pairwise: the base model answers {source}")
        reference = answer_prompts(client, prompts, None, settings, ctx.config.seed)
        losses = {loss.id: loss for loss in ctx.losses}
        for point in todo:
            _measure(ctx, point, losses[point.loss_id], prompts, reference, judge, settings,
                     {"judge": judge_name, "self_judge": bool(note), "note": note,
                      "prompt_set": settings.prompts, "prompts_seen_by_search": seen,
                      "answer_seed": ctx.config.seed, "prompt_source_note": source,
                      **agreement})
    finally:
        if judge_endpoint is not None:
            judge_endpoint.close()


def _measure(ctx: Any, point: Any, loss: Any, prompts: list[Prompt], reference: list[str],
             judge: Judge, settings: PairwiseSettings, about: dict[str, Any]) -> None:
    started = time.perf_counter()
    adapter, reason = heldout_adapter(ctx, point, loss)
    if adapter is None:
        ctx.record(point, {"loss_name": loss.name, "reason": reason}, status=HELDOUT_FAILED)
        return
    client = ctx.policy()
    _say(ctx, f"pairwise: {loss.name} answers {len(prompts)} held-out prompts")
    with served_adapter(client, adapter) as model:
        answers = answer_prompts(client, prompts, model, settings, ctx.config.seed)
    _say(ctx, f"pairwise: judging {len(prompts)} pairs of {loss.name}, each in both orders")
    games = judge_games(judge, prompts, answers, reference, settings.concurrency)
    metrics = {"loss_name": loss.name, "adapter": adapter, **summarise(games, seed=point.seed),
               **about,
               "seconds": round(time.perf_counter() - started, 1)}
    unreliable = unreliable_reason(metrics["parse_rate"], metrics["judge_agreement"])
    if unreliable:
        metrics["judge_unreliable"] = unreliable
    metrics["summary"] = (f"win {format_rate(metrics['win_rate'])}, length-controlled "
                          f"{format_rate(metrics['lc_win_rate'])}")
    out = Path(ctx.run_dir) / "heldout" / point.dir_name()
    out.mkdir(parents=True, exist_ok=True)
    with (out / "games.jsonl").open("w") as f:
        for prompt, answer, base, game in zip(prompts, answers, reference, games, strict=True):
            f.write(json.dumps({"id": prompt.id, "policy": answer, "reference": base,
                                "policy_as_a": game.first, "policy_as_b": game.second}) + "\n")
    ctx.record(point, metrics)


def seen_by_search(config: Any, source: str) -> bool:
    """Whether the run's task reads the prompt source: a file or data set its settings name
    (the search scores only its task's prompts)."""
    task = get_task(config.task.name)
    try:
        settings = task.settings(TaskContext(preset=config.preset,
                                             options=dict(config.task.options)))
    except (UserError, AttributeError):  # a task without settings reads no prompt source
        return False
    read = {_where(value) for value in dataclasses.asdict(settings).values()
            if isinstance(value, str) and value}
    return _where(source) in read


def _where(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source


def prompt_source_note(config: Any, source: str, count: int, seen: bool) -> str:
    """Which prompts, and whether the search saw them, in words."""
    name = Path(source).name if Path(source).expanduser().exists() else source
    if seen:
        return (f"{count} prompts from {name}, which the {config.task.name} task also scores: "
                "the search saw them (not held out)")
    return (f"{count} held-out prompts from {name}, which the search never saw (it scores the "
            f"{config.task.name} task's own prompts); answers sampled with seed "
            f"{config.seed} + the prompt's index")


def _say(ctx: Any, message: str) -> None:
    """A progress line (a log event: the headless printer and the TUI show it)."""
    ctx.emit("log", level="info", message=message)


def heldout_adapter(ctx: Any, point: Any, loss: Any) -> tuple[str | None, str]:
    """(the adapter of `loss` trained at point.beta with point.seed, or None; why not).

    An adapter another held-out protocol recorded for the same loss, beta and seed (its
    metrics' "adapter") is reused; otherwise ctx.evaluate trains one."""
    archive = Archive(ctx.run_dir)
    try:
        for row in archive.heldout_rows():
            kept = row.metrics.get("adapter")
            if (row.status == HELDOUT_DONE and kept and (row.loss_id, row.beta, row.seed)
                    == (point.loss_id, point.beta, point.seed)
                    and (Path(kept) / "adapter_config.json").is_file()):
                return kept, ""
    finally:
        archive.close()
    result = ctx.evaluate(point, loss.code, {})
    if result.status != SCORED or not result.adapter:
        return None, result.reason or "training saved no adapter"
    return result.adapter, ""


def open_judge(config: Any, settings: PairwiseSettings) -> tuple[Any, str, str]:
    """(the judge's endpoint, or None for the policy's own server; the judge's name; the
    self-judge note, empty for another judge). UserError for a self-judge without the opt-in."""
    policy = config.models.policy
    policy_names = {policy, Path(policy).name}
    try:
        resolved = resolve_model(policy)
        policy_names |= {resolved, Path(resolved).name}
    except UserError:
        pass
    endpoint = None
    if settings.judge:
        endpoint = open_llm(settings.judge, option="--option judge",
                            model=settings.judge_model or None)
        name = endpoint.client.model
    elif settings.judge_model:
        raise UserError("option judge_model names a model on the judge's server: give the "
                        "server too (--option judge=http://HOST:PORT/v1)")
    else:
        name = policy
    if name not in policy_names:
        return endpoint, name, ""
    if not settings.allow_self_judge:
        if endpoint is not None:
            endpoint.close()
        raise UserError(f"the pairwise judge ({name}) is the policy's own base model, and a "
                        "judge favours its own family's style: give another judge with "
                        "--option judge=http://HOST:PORT/v1 (and judge_model=NAME), or accept "
                        f"this one with {SELF_JUDGE_OPT_IN}")
    return endpoint, name, (f"self-judged: the pairwise judge ({name}) is the policy's own base "
                            "model (allow_self_judge); it favours its own family's style")


def seconds_per_point(archive: Any) -> float | None:
    """See session.seconds_per_point."""
    return session.seconds_per_point(archive, "pairwise")


def report_lines(rows: list[Any], run_dir: Path) -> list[str]:
    """The report's pairwise subsection: a table of raw and length-controlled win rates per
    loss (a self-judge note, metrics["note"], opens the whole held-out section)."""
    done = [row for row in rows if row.status == HELDOUT_DONE]
    lines = ["### Pairwise win rate against the base model", ""]
    if done:
        first = done[0].metrics
        self_judged = " (the policy's own base model)" if first.get("self_judge") else ""
        prompts = first.get("prompt_source_note") or (
            f"{first.get('prompts')} held-out prompts ({Path(str(first.get('prompt_set'))).name})")
        lines += [f"Judge {first.get('judge')}{self_judged}, {prompts}; both answer orders "
                  "judged, a "
                  "tie counts half. Length-controlled: the win rate a logistic regression on "
                  "the standardised length difference predicts at equal lengths (AlpacaEval "
                  "2), its standard error from a bootstrap over prompts."
                  + _agreement_text(first), "",
                  "| loss | win rate | length-controlled | length slope | chars (policy / "
                  "base) | consistency | parse rate |",
                  "|---|---|---|---|---|---|---|"]
        for row in done:
            m = row.metrics
            lines.append(
                f"| {m.get('loss_name', row.loss_id)} | "
                f"{format_rate(m['win_rate'], m['win_rate_stderr'])}"
                f" | {format_rate(m['lc_win_rate'], m['lc_win_rate_stderr'])}"
                f" | {m['length_slope']:.2f}"
                f" | {m['policy_mean_chars']:.0f} / {m['baseline_mean_chars']:.0f}"
                f" | {format_rate(m['consistency'])} | {format_rate(m['parse_rate'])} |")
    for reason in sorted({row.metrics["judge_unreliable"] for row in done
                          if row.metrics.get("judge_unreliable")}):
        lines.append(f"- Warning: {reason}; these win rates are not evidence.")
    for row in rows:
        if row.status != HELDOUT_DONE:
            lines.append(f"- {row.metrics.get('loss_name', row.loss_id)}: failed "
                         f"({row.metrics.get('reason', 'no reason recorded')})")
    return lines + [""]


def _agreement_text(metrics: dict) -> str:
    agreement = metrics.get("judge_agreement")
    if agreement is None:
        return ""
    return (f" The judge agreed with {format_rate(agreement)} of "
            f"{metrics.get('judge_agreement_n')} "
            "answer pairs of known quality (selfdisco/data/judge_pairs.jsonl; 0.5 is guessing).")


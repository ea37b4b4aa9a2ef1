"""Pairwise held-out protocol: both orders judged, ties half, the length-controlled win rate."""

from __future__ import annotations

import json
import math
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from selfdisco.errors import UserError
from selfdisco.heldout import pairwise
from selfdisco.heldout.pairwise import (
    SHIPPED_PROMPTS,
    PairwiseSettings,
    Prompt,
    judge_games,
    load_prompts,
    open_judge,
    report_lines,
)
from selfdisco.heldout.winrate import Comparison, length_controlled, summarise, win_rate
from selfdisco.llm.protocol import Completion
from selfdisco.rundir.archive import HeldoutRow
from selfdisco.tasks.judge import Judge

_ANSWER = re.compile(r"\[The Start of Assistant (A|B)'s Answer\]\n(.*?)\n\[The End", re.S)


class ScriptedJudgeClient:
    """Answers pairwise judge requests with real-format JSON verdicts, recording each request's
    (answer A, answer B). `prefer`: "longer" picks the longer answer; "tie" always says C."""

    def __init__(self, prefer: str = "longer"):
        self.prefer = prefer
        self.requests: list[tuple[str, str]] = []
        self.schemas: list[dict] = []
        self._lock = threading.Lock()

    def chat(self, messages, *, temperature, max_tokens, seed, model, json_schema):
        answers = dict(_ANSWER.findall(messages[-1]["content"]))
        with self._lock:
            self.requests.append((answers["A"], answers["B"]))
            self.schemas.append(json_schema)
        if self.prefer == "tie" or len(answers["A"]) == len(answers["B"]):
            verdict = "C"
        else:
            verdict = "A" if len(answers["A"]) > len(answers["B"]) else "B"
        reply = json.dumps({"reasoning": "compared the two answers", "verdict": verdict})
        return [Completion(text=reply, finish_reason="stop")]


def _prompts(n: int) -> list[Prompt]:
    return [Prompt(f"p{i}", f"instruction {i}") for i in range(n)]


def test_each_prompt_is_judged_in_both_orders():
    client = ScriptedJudgeClient()
    prompts = _prompts(5)
    policy = [f"policy answer {i} " + "x" * i for i in range(5)]
    reference = [f"reference answer {i}" for i in range(5)]
    games = judge_games(Judge(client, max_tokens=64), prompts, policy, reference, concurrency=1)
    assert len(client.requests) == 2 * len(prompts)
    for i in range(5):
        first, second = client.requests[2 * i], client.requests[2 * i + 1]
        assert first == (policy[i], reference[i])  # the policy shown as A first
        assert second == (reference[i], policy[i])  # then as B
    assert all(s["properties"]["verdict"]["enum"] == ["A", "B", "C"] for s in client.schemas)
    # the scripted judge prefers the longer answer in both orders (a tie for equal lengths)
    assert [g.outcome for g in games] == ["loss", "loss", "tie", "win", "win"]  # 2: equal


def test_ties_count_half():
    games = judge_games(Judge(ScriptedJudgeClient("tie"), max_tokens=64), _prompts(4),
                        ["a"] * 4, ["bb"] * 4, concurrency=1)
    metrics = summarise(games)
    assert metrics["win_rate"] == 0.5
    assert metrics["comparisons"] == 8 and metrics["parse_rate"] == 1.0


def _longer_wins(lengths: list[tuple[int, int]]) -> list:
    """Games judged by the scripted judge that prefers the longer answer."""
    policy = ["p" * a for a, _ in lengths]
    reference = ["r" * b for _, b in lengths]
    return judge_games(Judge(ScriptedJudgeClient(), max_tokens=64), _prompts(len(lengths)),
                       policy, reference, concurrency=1)


def test_length_controlled_rate_removes_a_length_advantage():
    # The policy is longer on 30 of 40 prompts and wins exactly those: raw win rate 0.75.
    lengths = [(100 + 5 * i, 80) for i in range(30)] + [(60, 80 + 5 * i) for i in range(10)]
    metrics = summarise(_longer_wins(lengths), seed=0)
    assert metrics["win_rate"] == pytest.approx(0.75)
    assert metrics["length_slope"] > 1.0
    assert metrics["lc_win_rate"] < 0.65  # most of the advantage was length
    assert abs(metrics["lc_win_rate"] - 0.5) < abs(metrics["win_rate"] - 0.5)
    assert 0 < metrics["lc_win_rate_stderr"] < 0.2
    assert metrics["longer_wins_rate"] == 1.0


def test_length_controlled_rate_moves_only_when_lengths_differ():
    outcomes = [1.0] * 30 + [0.0] * 10
    equal = [Comparison(i, s, 0) for i, s in enumerate(outcomes) for _ in range(2)]
    longer = [Comparison(i, s, 50 if s else -50) for i, s in enumerate(outcomes)
              for _ in range(2)]
    same_lengths = length_controlled(equal, seed=0)
    assert same_lengths["lc_win_rate"] == pytest.approx(win_rate(equal)[0], abs=1e-6)
    assert length_controlled(longer, seed=0)["lc_win_rate"] < same_lengths["lc_win_rate"] - 0.1


def test_win_rate_stderr_is_over_prompts_and_bootstrap_is_seeded():
    comps = [Comparison(i, float(i % 2), 10 * (i % 3) - 10) for i in range(20)
             for _ in range(2)]
    rate, stderr = win_rate(comps)
    assert rate == 0.5
    assert stderr == pytest.approx(math.sqrt(0.25 * 20 / 19 / 20))
    assert length_controlled(comps, seed=3) == length_controlled(comps, seed=3)


def test_unparsable_orders_are_left_out():
    class Garbled(ScriptedJudgeClient):
        def chat(self, *args, **kwargs):
            super().chat(*args, **kwargs)
            return [Completion(text="no verdict here", finish_reason="stop")]

    metrics = summarise(judge_games(Judge(Garbled(), max_tokens=64), _prompts(3), ["a"] * 3,
                                    ["b"] * 3, concurrency=1))
    assert metrics["comparisons"] == 0 and metrics["parse_rate"] == 0.0
    assert math.isnan(metrics["win_rate"]) and math.isnan(metrics["lc_win_rate"])


def test_shipped_prompts_load():
    prompts = load_prompts(str(SHIPPED_PROMPTS))
    assert len(prompts) == 48
    assert len({p.id for p in prompts}) == 48


def test_bad_prompt_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_prompts(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    with pytest.raises(UserError, match="instruction"):
        load_prompts(str(bad))


def test_options_are_typed_with_clear_errors():
    settings = PairwiseSettings.from_options({"max_prompts": "8", "allow_self_judge": "true",
                                              "frontier_betas": "0.1,0.2"})
    assert settings.max_prompts == 8 and settings.allow_self_judge
    with pytest.raises(UserError, match="whole number"):
        PairwiseSettings.from_options({"max_prompts": "many"})
    with pytest.raises(UserError, match="true or false"):
        PairwiseSettings.from_options({"allow_self_judge": "perhaps"})


def _config(policy: str = "smoke-llama"):
    return SimpleNamespace(models=SimpleNamespace(policy=policy))


def test_self_judge_needs_the_opt_in():
    with pytest.raises(UserError, match="allow_self_judge=true"):
        open_judge(_config(), PairwiseSettings())
    endpoint, name, note = open_judge(_config(), PairwiseSettings(allow_self_judge=True))
    assert endpoint is None and name == "smoke-llama"
    assert note.startswith("self-judged")
    with pytest.raises(UserError, match="judge=http"):
        open_judge(_config(), PairwiseSettings(judge_model="other"))


def test_report_says_self_judged_first():
    games = _longer_wins([(10, 5), (5, 10), (12, 5)])
    metrics = {"loss_name": "dpo", **summarise(games), "judge": "smoke-llama", "self_judge": True,
               "note": "self-judged: the pairwise judge (smoke-llama) is the policy's own base "
                       "model", "prompt_set": str(SHIPPED_PROMPTS)}
    rows = [HeldoutRow("pairwise", "dpo", 0.05, 1, "done", metrics),
            HeldoutRow("pairwise", "c1", 0.05, 1, "failed", {"reason": "diverged"})]
    from selfdisco.report import heldout_section

    section = heldout_section(rows, Path("."))
    assert section[1] == "## Held-out evaluation" and section[3].startswith("**Self-judged")
    lines = report_lines(rows, Path("."))
    assert "(the policy's own base model)" in " ".join(lines)
    table = [line for line in lines if line.startswith("| dpo")]
    assert len(table) == 1 and "| 0.67 ± 0.33 |" in table[0]  # a rate: format_rate
    assert any("c1: failed (diverged)" in line for line in lines)
    metrics.update(judge_agreement=0.5, judge_agreement_n=24,
                   judge_unreliable="its agreement on answer pairs of known quality 0.50 is "
                                    "below 0.75 (0.5 is guessing)")
    lines = report_lines([HeldoutRow("pairwise", "dpo", 0.05, 1, "done", metrics)], Path("."))
    assert "agreed with 0.50 of 24 answer pairs" in " ".join(lines)
    assert any(line.startswith("- Warning: its agreement") for line in lines)


class ScriptedPolicyServer(ScriptedJudgeClient):
    """A policy server that answers (the adapter at length, the base briefly) and, asked with
    a JSON schema, judges like ScriptedJudgeClient."""

    model = "smoke-llama"

    def __init__(self):
        super().__init__()
        self.loaded: list[str] = []

    def load_adapter(self, name, path):
        self.loaded.append(name)

    def unload_adapter(self, name):
        self.loaded.remove(name)

    def chat(self, messages, *, temperature, max_tokens, seed, model, json_schema=None):
        if json_schema is not None:
            return super().chat(messages, temperature=temperature, max_tokens=max_tokens,
                                seed=seed, model=model, json_schema=json_schema)
        text = "a long and detailed answer" if model else "short"
        return [Completion(text=text, finish_reason="stop")]


def test_run_records_each_loss_against_the_base_model(tmp_path):
    from selfdisco.config import RunConfig
    from selfdisco.execution.records import Result
    from selfdisco.heldout import HeldoutContext, HeldoutLoss
    from selfdisco.rundir.archive import Archive

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    archive = Archive(tmp_path)
    server = ScriptedPolicyServer()
    config = RunConfig(preset="smoke")
    config.models.policy = "smoke-llama"
    events = []

    def record(point, metrics, status="done"):
        archive.put_heldout(point.protocol, point.loss_id, point.beta, point.seed, status,
                            metrics)

    def evaluate(point, code, task_options=None):
        ok = point.loss_id == "dpo"
        return Result(status="scored" if ok else "failed", fitness=0.1 if ok else None,
                      adapter=str(adapter) if ok else None,
                      reason=None if ok else "diverged at step 3")

    ctx = HeldoutContext(
        run_dir=tmp_path, config=config, evaluate=evaluate, policy=lambda: server,
        losses=[HeldoutLoss("dpo", "dpo", "code"), HeldoutLoss("c1", "mine", "code")],
        betas=[0.05], seeds=[7], record=record, done=lambda point: False,
        emit=lambda type, **fields: events.append((type, fields)),
        options={"allow_self_judge": "true", "max_prompts": "6"})
    pairwise.run(ctx)
    rows = {row.loss_id: row for row in archive.heldout_rows("pairwise")}
    assert rows["c1"].status == "failed" and rows["c1"].metrics["reason"] == "diverged at step 3"
    m = rows["dpo"].metrics
    assert m["win_rate"] == 1.0 and m["comparisons"] == 12  # the longer answer always won
    assert m["lc_win_rate"] < m["win_rate"] and m["self_judge"] and m["adapter"] == str(adapter)
    # 6 prompts and the 24 known pairs, each judged in both orders
    assert len(server.requests) == 12 + 48 and server.loaded == []  # the adapter unloaded
    assert m["judge_agreement_n"] == 24 and 0.0 <= m["judge_agreement"] <= 1.0
    assert ("judge_unreliable" in m) == (m["judge_agreement"] < 0.75)
    assert any("judging 6 pairs of dpo" in fields["message"] for _, fields in events)
    # which prompts, and that the search (sentiment openings) never saw them
    assert m["prompts_seen_by_search"] is False and m["answer_seed"] == config.seed
    assert m["prompt_source_note"].startswith("6 held-out prompts from heldout_prompts.jsonl, "
                                              "which the search never saw")
    lines = report_lines(archive.heldout_rows("pairwise"), tmp_path)
    assert "which the search never saw" in " ".join(lines)
    archive.close()


def test_prompts_the_runs_task_reads_count_as_seen_by_the_search():
    from selfdisco.config import RunConfig
    from selfdisco.heldout.pairwise import prompt_source_note, seen_by_search

    config = RunConfig(preset="smoke")
    assert not seen_by_search(config, str(SHIPPED_PROMPTS))
    config.task.name = "mtbench"
    config.task.options = {"questions": str(SHIPPED_PROMPTS)}
    assert seen_by_search(config, str(SHIPPED_PROMPTS))
    assert "the search saw them (not held out)" in prompt_source_note(
        config, str(SHIPPED_PROMPTS), 48, True)


def test_registered_as_a_protocol():
    from selfdisco.heldout import PROTOCOLS, protocol_hook

    assert PROTOCOLS.load("pairwise") is pairwise.run
    assert protocol_hook("pairwise", "report_lines") is pairwise.report_lines


def test_seconds_per_point_is_the_measured_mean(tmp_path):
    from selfdisco.rundir.archive import Archive

    archive = Archive(tmp_path)
    assert pairwise.seconds_per_point(archive) is None  # nothing trained, nothing measured
    archive.put_heldout("pairwise", "dpo", 0.05, 1, "done", {"seconds": 100.0})
    archive.put_heldout("pairwise", "c1", 0.05, 1, "done", {"seconds": 50.0})
    archive.put_heldout("pairwise", "c2", 0.05, 1, "failed", {"reason": "diverged"})
    assert pairwise.seconds_per_point(archive) == 75.0
    archive.close()


@pytest.mark.integration
def test_pairwise_runs_against_a_served_policy_and_judge(tmp_path, vllm_smoke,
                                                         smoke_lora_adapter):
    """The pairwise protocol on the smoke model served by vLLM: base and adapter answer 8
    held-out prompts, the smoke model judges (with the opt-in) every pair in both orders under
    structured outputs, and the archive keeps the win rates and the self-judge note (the
    trainer is replaced by the fixture's adapter)."""
    from selfdisco.config import RunConfig
    from selfdisco.execution.records import Result
    from selfdisco.heldout import HeldoutContext, HeldoutLoss
    from selfdisco.rundir.archive import Archive

    archive = Archive(tmp_path)
    client = vllm_smoke.client()
    config = RunConfig(preset="smoke")
    config.models.policy = "smoke-llama"
    config.train.recipe = "smoke"

    def record(point, metrics, status="done"):
        archive.put_heldout(point.protocol, point.loss_id, point.beta, point.seed, status,
                            metrics)

    ctx = HeldoutContext(
        run_dir=tmp_path, config=config, losses=[HeldoutLoss("dpo", "dpo", "code")],
        betas=[0.05], seeds=[7],
        evaluate=lambda *a, **k: Result(status="scored", fitness=0.0,
                                        adapter=str(smoke_lora_adapter)),
        policy=lambda: client, record=record, done=lambda point: False,
        emit=lambda *a, **k: None,
        options={"allow_self_judge": "true", "max_prompts": "8", "answer_tokens": "16",
                 "judge_tokens": "48"})
    pairwise.run(ctx)
    [row] = archive.heldout_rows("pairwise")
    assert row.status == "done", row.metrics
    m = row.metrics
    assert m["prompts"] == 8 and m["parse_rate"] == 1.0 and m["comparisons"] == 16
    assert 0.0 <= m["win_rate"] <= 1.0 and 0.0 < m["lc_win_rate"] < 1.0
    assert m["self_judge"] and m["note"].startswith("self-judged")
    games = (tmp_path / "heldout" / "pairwise" / "dpo" / "beta0.05-seed7" / "games.jsonl")
    assert len(games.read_text().splitlines()) == 8
    from selfdisco.report import heldout_section

    assert heldout_section(archive.heldout_rows(), tmp_path)[3].startswith("**Self-judged")

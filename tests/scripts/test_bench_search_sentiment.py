"""The sentiment search benchmark's pure parts: its loss family, feedback parsing, step count."""

from __future__ import annotations

import importlib.util
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace

from selfdisco.execution.records import Result
from selfdisco.losses import Candidate, screen
from selfdisco.losses.grammar import matches

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_search_sentiment",
                                                  SCRIPTS / "bench_search_sentiment.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_search_sentiment"] = module
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def members(count: int, seed: int = 0) -> list[dict]:
    rng, member, out = random.Random(seed), bench.START, []
    for _ in range(count):
        member = bench.mutate(member, rng)
        out.append(member)
    return out


def test_every_member_is_in_the_grammar_and_reads_back():
    for member in members(500):
        name, code = bench.code_of(member)
        assert matches(code), code
        assert bench.member_of(code) == member
        assert len(name) <= 40


def test_members_screen_the_extremes_included():
    top = {"s": {"ws": 4.9, "a": 4.9}, "h": {"wh": 4.9, "m": 4.9, "c": 4.9},
           "e": {"we": 4.9, "e": 4.9}}
    bottom = {key: dict.fromkeys(values, 0.1) for key, values in top.items()}
    for member in [top, bottom, *members(40, seed=1)[::10]]:
        name, code = bench.code_of(member)
        result = screen(Candidate(thought="t", name=name, code=code), beta=0.05)
        assert result.ok, (name, result.reason)


def test_code_outside_the_family_is_not_a_member():
    _, code = bench.code_of({"s": {"ws": 1.0, "a": 1.0}})
    assert bench.member_of(code.replace("F.softplus", "torch.sigmoid")) is None
    assert bench.member_of("def f(x):\n    return x\n") is None


def test_fitness_feedback_reads_negative_values():
    assert bench.FITNESS.match("Fitness: -0.1234. Please generate the next one.").group(1) \
        == "-0.1234"
    assert float(bench.FITNESS.match("Fitness: 0.5").group(1)) == 0.5


def test_proposer_mutates_the_best_it_was_shown():
    good, bad = {"h": {"wh": 2.0, "m": 1.0, "c": 1.0}}, {"e": {"we": 0.5, "e": 1.0}}
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "baselines"}]
    for member, fitness in ((good, "0.1000"), (bad, "-0.3000")):
        name, code = bench.code_of(member)
        messages += [{"role": "assistant", "content": json.dumps(
                         {"thought": "t", "name": name, "code": code})},
                     {"role": "user", "content": f"Fitness: {fitness}. Please generate the next "
                                                 "one."}]
    assert bench.seen_members(messages) == [(0.1, good), (-0.3, bad)]
    answers = bench.FamilyProposer().chat(messages, n=3, seed=7)
    for answer in answers:
        child = bench.member_of(json.loads(answer.text)["code"])
        assert child is not None
        assert json.loads(answer.text)["thought"] == f"a variation of {bench.code_of(good)[0]}"


def test_steps_come_from_results_then_progress():
    count = bench.StepCount()

    class Inner:
        def evaluate(self, rows, on_progress, on_done, on_start=None, **options):
            for row in rows:
                on_progress(row, {"step": 3, "total": 4})
                result = (Result.failed("timeout", "too slow") if row.id == "g01-c2" else
                          Result(status="scored", fitness=0.1,
                                 metrics={"train": {"steps": 4 if options else 16}}))
                on_done(row, result)

    done = []
    evaluator = bench.CountingEvaluator(Inner(), count)
    proposal = SimpleNamespace(id="g01-c1", kind="proposal")
    evaluator.evaluate([SimpleNamespace(id="burn-dpo", kind="burn_in"), proposal,
                        SimpleNamespace(id="g01-c2", kind="proposal")],
                       lambda row, p: None, lambda row, r: done.append(row.id))
    assert (count.steps, count.proposal_steps) == (16 + 16 + 3, 16 + 3)
    evaluator.evaluate([proposal], lambda row, p: None, lambda row, r: None, fidelity=0.25)
    assert count.steps == 35 + 4 and len(done) == 3

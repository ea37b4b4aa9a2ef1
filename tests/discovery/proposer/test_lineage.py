"""Proposer lineage: figures per proposer and per generation from rows with known outcomes, and
the report's proposer section (tables, plot, duel lines) for a run with a duel."""

from __future__ import annotations

import math

import pytest
from loop_helpers import PromptCurveEvaluator, make_loop
from test_duel import GOOD, ByModel

from selfdisco.discovery.proposer import lineage
from selfdisco.report import write_report
from selfdisco.rundir.archive import Row


def row(id, generation, proposer, status, stage=None, fitness=None):
    return Row(id=id, seq=0, generation=generation, kind="proposal", status=status, stage=stage,
               fitness=fitness, proposer=proposer)


ROWS = [
    row("burn-dpo", 0, "catalog", "scored", fitness=0.9),  # the catalog's, not a proposer's
    row("g01-c1", 1, "base", "rejected", "parse"),
    row("g01-c1-r1", 1, "base", "rejected", "duplicate"),
    row("g01-c2", 1, "base", "scored", fitness=0.4),
    row("g01-c1-r2", 1, "base", "scored", fitness=0.6),
    row("g02-c1", 2, "g01-c1-r2", "rejected", "screen"),
    row("g02-c2", 2, "g01-c1-r2", "training"),
]


def test_figures_per_proposer():
    base, adapter = lineage.by_proposer(ROWS)
    assert (base.proposer, base.answers, base.generations) == ("base", 4, [1])
    assert base.rate("parse").count == 1 and base.rate("duplicate").value == 0.25
    assert base.rate("screen").count == 0
    rate = base.valid_novel
    assert (rate.count, rate.n, rate.value) == (2, 4, 0.5)
    assert rate.stderr == pytest.approx(math.sqrt(0.25 / 4))
    assert base.mean_fitness == pytest.approx(0.5)
    assert base.fitness_stderr == pytest.approx(math.sqrt(0.02) / math.sqrt(2))
    assert base.best_fitness == 0.6
    assert rate.text() == "0.50 ± 0.25 (2/4)"
    # an answer still in evaluation counts as valid and novel; no fitness yet
    assert adapter.valid_novel.count == 1 and adapter.rate("screen").count == 1
    assert adapter.mean_fitness is None and adapter.fitness_text() == "-"
    assert [g for g in lineage.by_generation(ROWS)] == [1, 2]
    assert lineage.Rate(0, 0).text() == "-"


def test_the_report_has_the_proposer_section(tmp_path):
    run = tmp_path / "run"
    make_loop(run, ByModel(GOOD, ["no json"] * 20), PromptCurveEvaluator(),
              duel_samples=2).run()
    text = write_report(run).read_text()
    section = text[text.index("## Proposers"):]
    assert "Self-improvement mode: **policy**" in section
    assert "| base | 1-2 |" in section
    assert "### Duels" in section and "not promoted" in section
    assert "duel after generation 1" in section
    assert (run / "report_lineage.png").stat().st_size > 1000

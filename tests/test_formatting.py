"""One fitness formatter, in the variants its callers show."""

from __future__ import annotations

import io

from selfdisco.discovery import prompt
from selfdisco.formatting import format_fitness, format_number
from selfdisco.tasks import Fitness
from selfdisco.tui.printer import Printer


def test_the_variants():
    assert format_fitness(0.41234, 0.0312) == "0.4123 ± 0.0312"
    assert format_fitness(0.41234) == "0.4123"
    assert format_fitness(None) == "" and format_fitness(None, missing="-") == "-"
    assert format_number(0.41234, 3) == "0.412" and format_number(None) == "-"


def test_the_callers_use_it():
    out = io.StringIO()
    printer = Printer(out)
    printer({"type": "candidate_scored", "id": "c1", "fitness": 0.5, "stderr": 0.25,
             "metrics": {}})
    assert "fitness 0.5000 ± 0.2500" in out.getvalue()
    assert "not measured" in prompt.burn_in_message([{"name": "dpo", "code": "x",
                                                       "fitness": None}])
    assert Fitness(value=0.5, stderr=0.25, n=4).summary() == "0.5000 ± 0.2500 (n=4)"

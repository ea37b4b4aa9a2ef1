"""One formatter per quantity (fitness, standard error, KL, rates, small errors), in the
variants its callers show."""

from __future__ import annotations

import io
import math

from selfdisco.discovery import prompt
from selfdisco.formatting import (
    format_difference,
    format_error,
    format_fitness,
    format_kl,
    format_rate,
    format_stderr,
)
from selfdisco.llm.numerics import NumericsReport
from selfdisco.stats import BlockedDifference
from selfdisco.tasks import Fitness
from selfdisco.tui.printer import Printer


def test_the_variants():
    assert format_fitness(0.41234, 0.0312) == "0.4123 ± 0.0312"
    assert format_fitness(0.41234) == "0.4123"
    assert format_fitness(None) == "" and format_fitness(None, missing="-") == "-"
    assert format_fitness(0.0123, 0.004, signed=True) == "+0.0123 ± 0.0040"
    assert format_stderr(0.03104) == "0.0310" and format_stderr(None) == "-"


def test_a_missing_standard_error_is_left_out():
    assert format_fitness(0.5, None) == format_fitness(0.5, math.nan) == "0.5000"
    assert format_kl(0.5, math.nan) == "0.500" and format_rate(0.5, None) == "0.50"
    assert format_stderr(math.nan) == "-"


def difference(mean: float, stderr: float | None, paired: bool) -> BlockedDifference:
    return BlockedDifference(mean, stderr, 1, None, None, {}, "", paired=paired)


def test_differences_of_fitness():
    assert format_difference(difference(0.0123, 0.004, paired=True)) == "+0.0123 ± 0.0040"
    assert format_difference(difference(-0.1, 0.05, paired=False)) == "~-0.1000 ± 0.0500"
    assert format_difference(difference(0.1, None, paired=False)) == "~+0.1000"
    assert format_difference(None) == "-" and format_difference(None, missing="") == ""


def test_kl_has_three_decimals_everywhere():
    assert format_kl(0.01234) == "0.012" and format_kl(-0.0082, 0.0096) == "-0.008 ± 0.010"
    assert format_kl(None) == "-" and format_kl(None, missing="") == ""


def test_rates_are_fractions_with_two_decimals():
    assert format_rate(0.5, 0.1768) == "0.50 ± 0.18"
    assert format_rate(0.25, 0.1, signed=True) == "+0.25 ± 0.10"
    assert format_rate(None) == format_rate(math.nan) == "-"  # a rate of nothing


def test_small_errors_in_scientific_form():
    assert format_error(2.1e-5) == "2.10e-05"  # 0.0000 at four decimals
    assert format_error(0.0) == "0.00e+00" and format_error(None) == "-"
    line = NumericsReport("float32", tokens=32, max_abs_error=2.1e-5, mean_abs_error=3e-6,
                          greedy_agree=32, tolerance=0.05).summary()
    assert "max |log-prob error| 2.10e-05 nats, mean 3.00e-06 over 32 tokens" in line


def test_the_callers_use_it():
    out = io.StringIO()
    printer = Printer(out)
    printer({"type": "candidate_scored", "id": "c1", "fitness": 0.5, "stderr": 0.25,
             "metrics": {}})
    assert "fitness 0.5000 ± 0.2500" in out.getvalue()
    assert "not measured" in prompt.burn_in_message([{"name": "dpo", "code": "x",
                                                       "fitness": None}])
    assert Fitness(value=0.5, stderr=0.25, n=4).summary() == "0.5000 ± 0.2500 (n=4)"
    assert Fitness(value=0.5, stderr=None, n=1).summary() == "0.5000 (n=1)"  # one prompt
    printer({"type": "candidate_scored", "id": "c2", "fitness": 0.5, "stderr": 0.25,
             "metrics": {"kl": 0.01234}})
    assert "fitness 0.5000 ± 0.2500, KL 0.012" in out.getvalue()

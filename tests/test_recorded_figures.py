"""The figures of the two recorded runs (tests/data/runs) as `selfdisco report` and the headless
printer show them, pinned as they were before the statistics helpers were merged into
selfdisco/stats.py (issue 25), with the marks of the corrected tie and better-than-dpo rules
(issue 27): a change to any figure below is a change to a printed or recorded number and must
be deliberate."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from selfdisco import stats
from selfdisco.cli import main
from selfdisco.tui.printer import Printer

RUNS = Path(__file__).parent / "data" / "runs"

# Lines of report.md that carry figures: the ranking (fitness, standard error, paired
# differences, KL), the fitness-KL correlation, the proposers' rates and the duel.
REPORT_LINES = {
    "smoke-sentiment": [
        "Self-improvement: from generation 2 the proposer was g01-c2 (its policy's fitness "
        "0.0002).",
        "| = |  | g01-c2 | osfulitrejectedchghaundloturwaree6ondked | 1 | 0.0002 | 0.0002 | "
        "+0.0000 ± 0.0000 | best | -0.009 | base |",
        "| = |  | burn-hinge | hinge | 0 | 0.0002 | 0.0002 | +0.0000 ± 0.0000 | -0.0000 ± 0.0000 | "
        "-0.008 | catalog |",
        "| = |  | burn-dpo | dpo | 0 | 0.0002 | 0.0002 | - | -0.0000 ± 0.0000 | -0.008 | catalog |",
        "| = |  | g01-c1 | hici5verelogpswisolicusicchcri5urzjectel | 1 | 0.0001 | 0.0002 | "
        "-0.0001 ± 0.0002 | -0.0001 ± 0.0002 | -0.003 | base |",
        "| = |  | base | base (untrained policy) | 0 | 0.0000 | 0.0000 | -0.0002 ± 0.0002 | "
        "-0.0002 ± 0.0002 | 0.000 | catalog |",
        "Tied with the best (g01-c2): base, burn-dpo, burn-hinge, g01-c1, g01-c2.",
        "No loss is better than dpo at a family-wise level of 0.05 (Holm over 4 comparisons).",
        "Fitness: reward - 0.02 x KL (nats).",
        "Correlation of fitness with KL across the 5 scored rows: r = -1.00.",
        "### g01-c2 osfulitrejectedchghaundloturwaree6ondked (fitness 0.0002)",
        "### g01-c1 hici5verelogpswisolicusicchcri5urzjectel (fitness 0.0001)",
        "| base | 1 | 2 | 0.00 ± 0.00 (0/2) | 0.00 ± 0.00 (0/2) | 0.00 ± 0.00 (0/2) | "
        "1.00 ± 0.00 (2/2) | 0.0001 ± 0.0001 (n 2), best 0.0002 |",
        "| 1 | base | 2 | 1.00 ± 0.00 (2/2) | 0.0001 ± 0.0001 (n 2), best 0.0002 |",
        "- duel after generation 1: g01-c2 4/4 valid and novel vs base 4/4: promoted "
        "(valid-and-novel rate tie (+0.00 ± 0.00), fitness +0.0001822 ± 0.0002169)",
    ],
    "digits": [
        "| = |  | burn-label_smoothing | label_smoothing | 0 | 0.9611 | 0.0083 | - | best | - | "
        "catalog |",
        "| = |  | burn-cross_entropy | cross_entropy | 0 | 0.9537 | 0.0090 | - | "
        "-0.0074 ± 0.0045 | - | catalog |",
        # one training seed and no loss on two: training noise unmeasured, so nothing is
        # ranked below the best (issue 27), not even the untrained policy
        "| = |  | base | base (untrained policy) | 0 | 0.0870 | 0.0121 | - | -0.8741 ± 0.0150 | "
        "- | catalog |",
        "Tied with the best (burn-label_smoothing): base, burn-cross_entropy, "
        "burn-label_smoothing.",
        "| base | 1 | 8 | 0.00 ± 0.00 (0/8) | 1.00 ± 0.00 (8/8) | 0.00 ± 0.00 (0/8) | "
        "0.00 ± 0.00 (0/8) | - |",
        "| 1 | base | 8 | 0.00 ± 0.00 (0/8) | - |",
    ],
}

# `selfdisco report --json`'s ranking: (id, fitness, stderr, KL, difference to dpo and its
# standard error), exactly; the differences are computed by stats.difference from the
# recorded per-prompt scores.
RANKING = {
    "smoke-sentiment": [
        ("g01-c2", 0.00018220901489257807, 0.00021685864899759346, -0.009110450744628906,
         (1.7375000000000006e-05, 4.2399855752786977e-05)),
        ("burn-hinge", 0.00016515731811523444, 0.0002060340330871704, -0.008257865905761719,
         (3.750000000000193e-07, 1.829812636778594e-07)),
        ("burn-dpo", 0.00016489982604980468, 0.0002060119746589793, -0.008244991302490234,
         None),
        ("g01-c1", 6.688117980957031e-05, 0.0001616736131011026, -0.0033440589904785156,
         (-9.787499999999997e-05, 0.00022308666137208397)),
        ("base", 0.0, 0.0, 0.0, (-0.00016474999999999997, 0.00020603421612510315)),
    ],
    "digits": [
        ("burn-label_smoothing", 0.9611111283302307, 0.008319602836187054, None, None),
        ("burn-cross_entropy", 0.9537037014961243, 0.009042384891977272, None, None),
        ("base", 0.08703703433275223, 0.012130584928899497, None, None),
    ],
}

# The headless printer's line for each scored candidate of the recorded event logs.
PRINTED = {
    "smoke-sentiment": [
        "base base (untrained policy) fitness 0.0000 ± 0.0000, KL 0.000",
        "burn-dpo dpo fitness 0.0002 ± 0.0002, KL -0.008",
        "burn-hinge hinge fitness 0.0002 ± 0.0002, KL -0.008",
        "g01-c1 hici5verelogpswisolicusicchcri5urzjectel fitness 0.0001 ± 0.0002, KL -0.003",
        "g01-c2 osfulitrejectedchghaundloturwaree6ondked fitness 0.0002 ± 0.0002, KL -0.009",
    ],
    "digits": [
        "base base (untrained policy) fitness 0.0870 ± 0.0121",
        "burn-cross_entropy cross_entropy fitness 0.9537 ± 0.0090",
        "burn-label_smoothing label_smoothing fitness 0.9611 ± 0.0083",
    ],
}

# The mean and standard error of each smoke candidate's recorded per-prompt scores (rounded to
# 6 decimals when recorded, so not exactly its recorded fitness), as the sentiment task
# computed them before the merge.
PER_PROMPT = {
    "base": (0.0, 0.0),
    "burn-dpo": (0.00016474999999999997, 0.00020603421612510315),
    "burn-hinge": (0.00016512500000000002, 0.0002060629617287604),
    "g01-c1": (6.687500000000001e-05, 0.00016167763754503236),
    "g01-c2": (0.00018212500000000002, 0.00021689681858135743),
}


@pytest.fixture(params=sorted(REPORT_LINES))
def run_dir(request, tmp_path) -> Path:
    copy = tmp_path / request.param
    shutil.copytree(RUNS / request.param, copy)
    return copy


def test_the_report_prints_the_recorded_figures(run_dir, capsys):
    assert main(["report", str(run_dir), "--json"]) == 0
    ranking = json.loads(capsys.readouterr().out)["ranking"]
    lines = (run_dir / "report.md").read_text().splitlines()
    missing = [line for line in REPORT_LINES[run_dir.name] if line not in lines]
    assert not missing, "figures changed; the report now says:\n" + "\n".join(
        line for line in lines if "|" in line or any(c.isdigit() for c in line))
    shown = [(r["id"], r["fitness"], r["stderr"], r["kl"],
              None if r["vs_dpo"] is None else (r["vs_dpo"]["difference"],
                                                r["vs_dpo"]["stderr"]))
             for r in ranking]
    assert shown == RANKING[run_dir.name]


def test_the_printer_prints_the_recorded_figures(run_dir):
    out = io.StringIO()
    printer = Printer(out)
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        if line.strip():
            printer(json.loads(line))
    printed = [line.split("  ", 2)[-1].strip() for line in out.getvalue().splitlines()]
    assert [line for line in PRINTED[run_dir.name] if line not in printed] == []


def test_the_mean_and_standard_error_of_recorded_per_prompt_scores():
    for candidate, expected in PER_PROMPT.items():
        result = json.loads((RUNS / "smoke-sentiment" / "candidates" / candidate
                             / "result.json").read_text())
        assert stats.mean_stderr(result["metrics"]["per_prompt"]) == expected

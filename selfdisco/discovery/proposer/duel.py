"""The proposer duel: before any promotion, the current proposer and the challenger answer the
same context with the same seeds, N answers each, and every answer is parsed, screened and
de-duplicated (no training). The challenger must win (RULE): a valid-and-novel rate higher by
an exact one-sided test, and, where both proposers' policies were scored, a higher fitness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from selfdisco import stats
from selfdisco.formatting import format_fitness, format_rate
from selfdisco.stats import TIE_SE, mean_stderr

VALID = "valid"  # an answer's outcome: valid (and novel), or the stage that rejected it
# The one-sided level of each of the duel's two tests. With independent answers, a challenger
# no better than the current proposer wins the rate test at most this often; at 32 answers a
# side one at 0.75 against 0.25 wins it 0.99 of the time (exact; tests/discovery/proposer).
ALPHA = 0.05
RULE = ("the challenger is promoted only when it wins: its valid-and-novel rate is higher than "
        "the current proposer's by an exact one-sided sign test on the answers where the two "
        f"differ (McNemar's exact test; answer i of each side shares a seed) at {ALPHA:g}, and, "
        "where both proposers' policies were scored, its fitness is higher at one-sided "
        f"{ALPHA:g} (blocked by training seed and paired by prompt; a comparison that leaves "
        "out a source of noise does not count as higher). Duels recorded under the earlier rule "
        "(promoted unless worse by more than 2 standard errors: a tie promoted) keep their "
        "decision")


@dataclass
class DuelRecord:
    """One duel, as the archive keeps it and the report shows it."""

    generation: int  # the duel after this generation
    current: str
    challenger: str
    adapter: str  # the challenger's adapter path
    samples: int
    seed: int
    current_outcomes: list[str]
    challenger_outcomes: list[str]
    difference: float  # challenger's valid-and-novel rate minus the current's
    stderr: float
    promoted: bool
    reason: str
    fitness: dict | None = None  # fitness_check's; None: not measured
    current_answers: list[str] = field(default_factory=list)
    challenger_answers: list[str] = field(default_factory=list)
    p_value: float | None = None  # the rate test's; None: recorded under the earlier rule

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DuelRecord:
        """A recorded duel, its reason in today's words (see reworded)."""
        record = cls(**data)
        record.reason = reworded(record.reason, record.difference, record.stderr)
        return record

    def valid(self, side: str) -> int:
        """Valid-and-novel answers of the side ("current" or "challenger")."""
        return getattr(self, f"{side}_outcomes").count(VALID)

    def summary(self) -> str:
        """One line: who, the counts, the decision and why."""
        verdict = "promoted" if self.promoted else "not promoted"
        return (f"duel after generation {self.generation}: {self.challenger} "
                f"{self.valid('challenger')}/{self.samples} valid and novel vs {self.current} "
                f"{self.valid('current')}/{self.samples}: {verdict} ({self.reason})")


class Decision(NamedTuple):
    promoted: bool
    difference: float  # challenger's valid-and-novel rate minus the current's
    stderr: float  # its paired standard error (shown; the exact test decides)
    p_value: float  # the rate test's one-sided p
    reason: str


def outcomes(texts: Iterable[str], parse: Callable, screen: Callable, known: list,
             tolerance: float, within: Any = None, **screen_options: Any) -> list[str]:
    """Each answer's outcome: "parse", "screen", "duplicate" (of a known fingerprint or of an
    earlier answer in `texts`, compared `within` the run's reach: Fingerprint.is_duplicate) or
    VALID."""
    seen = list(known)
    found = []
    for text in texts:
        try:
            candidate = parse(text)
        except ValueError:
            found.append("parse")
            continue
        result = screen(candidate, **screen_options)
        if not result.ok:
            found.append("screen")
        elif any(result.fingerprint.is_duplicate(other, tolerance, within=within)
                 for other in seen):
            found.append("duplicate")
        else:
            seen.append(result.fingerprint)
            found.append(VALID)
    return found


def paired_difference(current: list[str], challenger: list[str]) -> tuple[float, float]:
    """Mean and standard error of (challenger valid) - (current valid) over paired answers;
    one answer each has no spread (stderr 0)."""
    d = [int(x == VALID) - int(c == VALID) for c, x in zip(current, challenger, strict=True)]
    mean, stderr = mean_stderr(d)
    return mean, stderr or 0.0


def rate_test(current: list[str], challenger: list[str]) -> tuple[int, int, float]:
    """McNemar's exact test of "the challenger's valid-and-novel rate is no higher".

    Returns:
        (won, lost, p): the paired answers valid and novel for the challenger only and for the
        current proposer only, and the one-sided p of `won` of the `won + lost` discordant
        pairs under a fair coin (scipy.stats.binomtest); p is 1 when no pair differs.
    """
    pairs = list(zip(current, challenger, strict=True))
    won = sum(x == VALID and c != VALID for c, x in pairs)
    lost = sum(c == VALID and x != VALID for c, x in pairs)
    if not won + lost:
        return won, lost, 1.0
    # lazy: scipy.stats takes about a second to import, and the TUI imports this module
    from scipy.stats import binomtest

    return won, lost, float(binomtest(won, won + lost, 0.5, alternative="greater").pvalue)


def fitness_check(current: Any, challenger: Any, rows: list) -> dict | None:
    """The fitness comparison of the two proposers' policy rows (archive rows; the base
    policy is the first proposer's), blocked by training seed and paired by prompt with the
    run's pooled interaction, or against the untrained policy its seed variance
    (stats.difference), or None when either side has no measured fitness.

    p_value is the one-sided p of "the challenger's fitness is no higher", None when the
    comparison leaves out a source of noise (stats.better_than_reference's rule: no claim).
    """
    if current is None or challenger is None:
        return None
    d = stats.difference(challenger, current, stats.run_interaction(rows),
                         stats.run_seed_pool(rows))
    if d is None:
        return None
    return {"current": current.fitness, "challenger": challenger.fitness,
            "difference": d.mean, "stderr": d.stderr or 0.0, "df": d.df, "seeds": d.n_seeds,
            "p_value": None if d.omitted else d.p_value(), "omitted": list(d.omitted)}


def rate_word(difference: float, stderr: float) -> str:
    """How a challenger's rate compared under the earlier rule: never "higher" inside TIE_SE
    s.e."""
    return ("tie" if difference == 0 else
            "higher" if difference > TIE_SE * stderr else "within noise")


def reworded(reason: str, difference: float, stderr: float) -> str:
    """A recorded reason with today's word for the rate (the earliest records said "higher"
    for any positive difference)."""
    return reason.replace("rate higher (", f"rate {rate_word(difference, stderr)} (", 1)


def decide(current: list[str], challenger: list[str], fitness: dict | None = None) -> Decision:
    """The decision under RULE from the paired outcomes and fitness_check's comparison."""
    difference, stderr = paired_difference(current, challenger)
    won, lost, p = rate_test(current, challenger)
    test = (f"{won} answers valid and novel for the challenger only, {lost} for the current "
            f"proposer only ({format_rate(difference, stderr, signed=True)}), exact one-sided "
            f"p {p:.3g}")
    if p > ALPHA:
        return Decision(False, difference, stderr, p,
                        f"valid-and-novel rate not shown higher: {test} > {ALPHA:g}")
    reason = f"valid-and-novel rate higher: {test} <= {ALPHA:g}"
    if fitness is None:
        return Decision(True, difference, stderr, p, reason)
    change = format_fitness(fitness["difference"], fitness["stderr"], signed=True)
    fitness_p = fitness.get("p_value")
    if fitness_p is None:
        left_out = " and ".join(fitness.get("omitted") or ["a"])
        return Decision(False, difference, stderr, p,
                        f"{reason}; fitness {change} not shown higher: the comparison leaves "
                        f"out the {left_out} noise")
    if fitness_p > ALPHA:
        return Decision(False, difference, stderr, p,
                        f"{reason}; fitness {change} not shown higher: one-sided p "
                        f"{fitness_p:.3g} > {ALPHA:g}")
    return Decision(True, difference, stderr, p,
                    f"{reason}; fitness {change}, one-sided p {fitness_p:.3g}")

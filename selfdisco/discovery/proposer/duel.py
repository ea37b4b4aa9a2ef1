"""The proposer duel: before any promotion, the current proposer and the challenger answer the
same context with the same seeds, N answers each, and every answer is parsed, screened and
de-duplicated (no training). The rule (RULE) decides from the valid-and-novel outcomes, and from
fitness where both proposers' policies were scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from selfdisco import stats
from selfdisco.formatting import format_fitness, format_rate
from selfdisco.stats import TIE_SE, mean_stderr

VALID = "valid"  # an answer's outcome: valid (and novel), or the stage that rejected it
RULE = ("the challenger is promoted unless its valid-and-novel rate is below the current "
        f"proposer's by more than {TIE_SE:g} standard errors of the paired difference (answer i "
        "of each side shares a seed; a difference with no spread counts in full); a tie "
        "promotes. Where both proposers' policies were scored, fitness must pass the same test "
        f"({TIE_SE:g} standard errors of the difference, blocked by training seed and paired "
        "by prompt)")


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
    fitness: dict | None = None  # current, challenger, difference, stderr; None: not measured
    current_answers: list[str] = field(default_factory=list)
    challenger_answers: list[str] = field(default_factory=list)

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


def outcomes(texts: Iterable[str], parse: Callable, screen: Callable, known: list,
             tolerance: float, **screen_options: Any) -> list[str]:
    """Each answer's outcome: "parse", "screen", "duplicate" (of a known fingerprint or of an
    earlier answer in `texts`) or VALID."""
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
        elif any(result.fingerprint.is_duplicate(other, tolerance) for other in seen):
            found.append("duplicate")
        else:
            seen.append(result.fingerprint)
            found.append(VALID)
    return found


def paired_difference(current: list[str], challenger: list[str]) -> tuple[float, float]:
    """Mean and standard error of (challenger valid) - (current valid) over paired answers;
    one answer each has no spread (stderr 0), so its difference counts in full."""
    d = [int(x == VALID) - int(c == VALID) for c, x in zip(current, challenger, strict=True)]
    mean, stderr = mean_stderr(d)
    return mean, stderr or 0.0


def worse(difference: float, stderr: float) -> bool:
    """Below zero by more than TIE_SE standard errors (any negative difference when stderr is
    0)."""
    return difference < 0 and difference < -TIE_SE * stderr


def fitness_check(current: Any, challenger: Any, rows: list) -> dict | None:
    """The fitness comparison of the two proposers' policy rows (archive rows; the base
    policy is the first proposer's), blocked by training seed with the run's pooled interaction
    (stats.difference), or None when either side has no measured fitness."""
    if current is None or challenger is None:
        return None
    d = stats.difference(challenger, current, stats.run_interaction(rows))
    if d is None:
        return None
    return {"current": current.fitness, "challenger": challenger.fitness,
            "difference": d.mean, "stderr": d.stderr or 0.0, "df": d.df, "seeds": d.n_seeds}


def rate_word(difference: float, stderr: float) -> str:
    """How a promoted challenger's rate compares: never "higher" inside TIE_SE s.e."""
    return ("tie" if difference == 0 else
            "higher" if difference > TIE_SE * stderr else "within noise")


def reworded(reason: str, difference: float, stderr: float) -> str:
    """A recorded reason with today's word for the rate (older records said "higher" for any
    positive difference)."""
    return reason.replace("rate higher (", f"rate {rate_word(difference, stderr)} (", 1)


def decide(current: list[str], challenger: list[str],
           fitness: dict | None = None) -> tuple[bool, float, float, str]:
    """(promoted, difference, stderr, reason) under RULE."""
    difference, stderr = paired_difference(current, challenger)
    if worse(difference, stderr):
        return False, difference, stderr, (
            f"valid-and-novel rate lower by {format_rate(-difference)}, more than {TIE_SE:g} x "
            f"{format_rate(stderr)}")
    if fitness is not None and worse(fitness["difference"], fitness["stderr"]):
        return False, difference, stderr, (
            f"fitness lower by {format_fitness(-fitness['difference'])}, more than {TIE_SE:g} x "
            f"{format_fitness(fitness['stderr'])}")
    reason = (f"valid-and-novel rate {rate_word(difference, stderr)} "
              f"({format_rate(difference, stderr, signed=True)})")
    if fitness is not None:
        reason += (f", fitness "
                   f"{format_fitness(fitness['difference'], fitness['stderr'], signed=True)}")
    return True, difference, stderr, reason

"""Proposer lineage: how well each proposer a run used (the base model, each promoted adapter)
proposes, measured from its answers.

Derived from candidate rows (the archive's, or the TUI's fold of the event log): any object with
generation, proposer, status, stage and fitness. Every answer is one proposal row, resamples
included; burn-in rows (generation 0) are the catalog's, not a proposer's. A valid-and-novel
answer is one that passed parsing, screening and de-duplication. Rates carry the binomial
standard error sqrt(p (1 - p) / n); fitness the standard error of the mean over the scored ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.discovery.proposer.duel import RULE, DuelRecord
from selfdisco.formatting import format_fitness, format_rate
from selfdisco.rundir.events import REJECTED, SCORED

REJECTION_STAGES = ("parse", "screen", "duplicate")


@dataclass
class Rate:
    """count of n, with its binomial standard error."""

    count: int
    n: int

    @property
    def value(self) -> float | None:
        return self.count / self.n if self.n else None

    @property
    def stderr(self) -> float | None:
        p = self.value
        return None if p is None else stats.proportion_stderr(p, self.n)

    def text(self) -> str:
        """'0.50 ± 0.18 (4/8)', or '-' with no answers."""
        if not self.n:
            return "-"
        return f"{format_rate(self.value, self.stderr)} ({self.count}/{self.n})"


@dataclass
class Figures:
    """One proposer's (or one generation's) answers and what became of them."""

    proposer: str
    generations: list[int] = field(default_factory=list)
    answers: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTION_STAGES, 0))
    fitnesses: list[float] = field(default_factory=list)  # of its scored proposals

    def add(self, row: Any) -> None:
        if row.generation not in self.generations:
            self.generations.append(row.generation)
        self.answers += 1
        if row.status == REJECTED:
            stage = row.stage if row.stage in self.rejected else "screen"
            self.rejected[stage] += 1
        elif row.status == SCORED and row.fitness is not None:
            self.fitnesses.append(float(row.fitness))

    def rate(self, stage: str) -> Rate:
        """The share of answers rejected at `stage` (parse, screen or duplicate)."""
        return Rate(self.rejected[stage], self.answers)

    @property
    def valid_novel(self) -> Rate:
        return Rate(self.answers - sum(self.rejected.values()), self.answers)

    @property
    def mean_fitness(self) -> float | None:
        return stats.mean(self.fitnesses) if self.fitnesses else None

    @property
    def fitness_stderr(self) -> float | None:
        return stats.mean_stderr(self.fitnesses)[1]

    @property
    def best_fitness(self) -> float | None:
        return max(self.fitnesses) if self.fitnesses else None

    def fitness_text(self) -> str:
        """'0.123 ± 0.010 (n 4), best 0.150', or '-' with nothing scored."""
        if not self.fitnesses:
            return "-"
        return (f"{format_fitness(self.mean_fitness, self.fitness_stderr)} "
                f"(n {len(self.fitnesses)}), best {format_fitness(self.best_fitness)}")


def proposals(rows: Iterable[Any]) -> list[Any]:
    """The rows a proposer answered (not the burn-in's catalog losses)."""
    return [r for r in rows if r.generation > 0 and r.proposer and r.proposer != "catalog"]


def by_proposer(rows: Iterable[Any]) -> list[Figures]:
    """Figures per proposer, in the order the run first used them."""
    figures: dict[str, Figures] = {}
    for row in proposals(rows):
        figures.setdefault(row.proposer, Figures(row.proposer)).add(row)
    return list(figures.values())


def by_generation(rows: Iterable[Any]) -> dict[int, Figures]:
    """Figures per generation (its proposer's name on each)."""
    figures: dict[int, Figures] = {}
    for row in proposals(rows):
        figures.setdefault(row.generation, Figures(row.proposer)).add(row)
    return dict(sorted(figures.items()))


def table(figures: list[Figures]) -> list[str]:
    """The per-proposer table in Markdown."""
    lines = ["| proposer | in generations | answers | parse failed | screen rejected | duplicate | "
             "valid and novel | mean fitness (best) |", "|---|---|---|---|---|---|---|---|"]
    for f in figures:
        span = f"{min(f.generations)}-{max(f.generations)}" if len(f.generations) > 1 \
            else str(f.generations[0])
        lines.append(f"| {f.proposer} | {span} | {f.answers} | {f.rate('parse').text()} | "
                     f"{f.rate('screen').text()} | {f.rate('duplicate').text()} | "
                     f"{f.valid_novel.text()} | {f.fitness_text()} |")
    return lines


def plot(generations: dict[int, Figures], path) -> None:
    """Valid-and-novel rate and mean fitness of the proposals, per generation, with 1 s.e."""
    # lazy: loads matplotlib
    import matplotlib

    matplotlib.use("Agg")
    # lazy: loads matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    xs = list(generations)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    rates = [generations[g].valid_novel for g in xs]
    top.errorbar(xs, [r.value for r in rates], yerr=[r.stderr for r in rates], fmt="o-",
                 capsize=3)
    top.set_ylabel("valid and novel")
    top.set_ylim(-0.05, 1.05)
    scored = [g for g in xs if generations[g].fitnesses]
    bottom.errorbar(scored, [generations[g].mean_fitness for g in scored],
                    yerr=[generations[g].fitness_stderr or 0.0 for g in scored], fmt="s-",
                    capsize=3, color="tab:green")
    bottom.set_ylabel("mean fitness")
    bottom.set_xlabel("generation (label: its proposer)")
    for g in xs:
        top.annotate(generations[g].proposer, (g, 1.0), fontsize=7, ha="center")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_section(rows: list[Any], duels: dict[int, dict], run_dir, mode: str) -> list[str]:
    """The report's proposer section: per proposer, per generation (table and plot
    report_lineage.png in run_dir), and one line per duel."""
    lines = ["## Proposers", "", f"Self-improvement mode: **{mode}**. Rates are of all answers "
             "(resamples included), with their binomial standard error and count.", ""]
    figures = by_proposer(rows)
    if not figures:
        return lines + ["No proposals were made.", ""]
    lines += table(figures) + ["", "| generation | proposer | answers | valid and novel | "
                               "mean fitness (best) |", "|---|---|---|---|---|"]
    generations = by_generation(rows)
    for g, f in generations.items():
        lines.append(f"| {g} | {f.proposer} | {f.answers} | {f.valid_novel.text()} | "
                     f"{f.fitness_text()} |")
    plot(generations, Path(run_dir) / "report_lineage.png")
    lines += ["", "![proposers by generation](report_lineage.png)", ""]
    if duels:
        lines += ["### Duels", "", f"Rule: {RULE}.", ""]
        lines += [f"- {DuelRecord.from_json(d).summary()}" for _, d in sorted(duels.items())]
        lines.append("")
    return lines

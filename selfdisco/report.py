"""A Markdown summary of a run, with plots: fitness per candidate (with its standard error) and
best so far per generation, and the top losses' shapes beside dpo, as screening recorded them
(no loss code runs here). The table shows each candidate's seed-blocked difference to dpo,
which are better than dpo (stats.BETTER_RULE) and which are tied with the best (stats.TIE_RULE)
instead of a strict order, both corrected for the run's number of comparisons."""

from __future__ import annotations

import math
from pathlib import Path

from selfdisco import stats
from selfdisco.config import read_run_config
from selfdisco.discovery.proposer import lineage
from selfdisco.discovery.search import fidelity
from selfdisco.formatting import format_difference, format_fitness, format_kl, format_stderr
from selfdisco.heldout import PROTOCOLS, protocol_hook
from selfdisco.losses.curves import plot_shapes as plot
from selfdisco.rundir.archive import REFERENCE_SHAPE, Archive, HeldoutRow, Row
from selfdisco.rundir.events import SCORED, UNSCORED
from selfdisco.rundir.shape import LossShape


def plot_fitness(rows: list[Row], path: Path, pooled: float | None = None) -> None:
    """Each scored row at its generation with its standard error, and the best so far."""
    # lazy: loads matplotlib
    import matplotlib

    matplotlib.use("Agg")
    # lazy: loads matplotlib
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4))
    for group, style in (([r for r in rows if r.generation == 0 and r.status == SCORED],
                          {"fmt": "s", "color": "grey", "label": "burn-in and base"}),
                         ([r for r in rows if r.generation > 0 and r.status == SCORED],
                          {"fmt": "o", "label": "candidates"})):
        if group:
            errors = [stats.row_stderr(r, pooled) or 0.0 for r in group]
            ax.errorbar(_spread(group), [r.fitness for r in group], yerr=errors, capsize=3,
                        linestyle="none", **style)
    generations = sorted({r.generation for r in rows})
    best, curve = None, []
    for g in generations:
        for r in rows:
            if r.generation == g and r.status == SCORED:
                best = r.fitness if best is None else max(best, r.fitness)
        curve.append(best)
    ax.step(generations, curve, where="post", color="black", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("generation (0 = burn-in)")
    ax.set_ylabel("fitness (bars: 1 standard error)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _spread(rows: list[Row]) -> list[float]:
    """x positions: the generation, spread a little within it so error bars do not overlap."""
    counts: dict[int, int] = {}
    for r in rows:
        counts[r.generation] = counts.get(r.generation, 0) + 1
    seen: dict[int, int] = {}
    x = []
    for r in rows:
        index = seen[r.generation] = seen.get(r.generation, -1) + 1
        x.append(r.generation + 0.3 * ((index + 0.5) / counts[r.generation] - 0.5))
    return x


def plot_shapes(rows: list[Row], reference: dict | None, path: Path) -> float | None:
    """Loss and slope against rho for the rows' recorded shapes and dpo's; returns the beta
    they were recorded at, or None when no row has a shape (a run from before shapes were
    recorded)."""
    shapes = [(f"{r.id} {r.name}", LossShape.from_dict(r.shape)) for r in rows if r.shape]
    if not shapes:
        return None
    if reference:
        shapes.insert(0, ("dpo", LossShape.from_dict(reference)))
    plot(shapes, path)
    return shapes[-1][1].beta


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    archive = Archive(run_dir)
    rows = archive.rows()
    generations = archive.generations()
    proposer = archive.get_meta("proposer")
    duels = archive.duels()
    reference_shape = archive.get_meta(REFERENCE_SHAPE)
    heldout = archive.heldout_rows()
    stages = archive.stages()
    archive.close()
    scored = sorted((r for r in rows if r.status == SCORED), key=lambda r: -r.fitness)
    counts: dict[str, int] = {}
    for r in rows:
        if r.kind == "proposal":
            counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"# selfdisco run {run_dir.name}", "",
             f"Task **{config.task.name}**, preset **{config.preset}**, policy "
             f"`{config.models.policy}`, proposer `{config.proposer_model}` "
             f"({config.server.proposer_source}), seed {config.seed}.", "",
             f"Generations finished: {sum(g['state'] == 'done' for g in generations)} of "
             f"{config.discovery.generations}. Proposals: "
             + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + ".", ""]
    reused = [r for r in rows if r.metrics.get("cached_from")]
    if reused:
        lines += ["Baselines reused from an earlier run's burn-in cache (same task, model, "
                  "training recipe, seeds and loss code): "
                  + ", ".join(f"{r.id} (from run {r.metrics['cached_from']})" for r in reused)
                  + ".", ""]
    if proposer:
        lines += [f"Self-improvement: from generation {proposer['generation'] + 1} the proposer "
                  f"was {proposer['id']}"
                  + ("" if proposer["fitness"] is None else
                     f" (its policy's fitness {format_fitness(proposer['fitness'])})")
                  + ".", ""]
    comparison = stats.compare(scored)
    lines += _ranking(scored, comparison)
    plot_fitness(rows, run_dir / "report_fitness.png", comparison.pooled if comparison else None)
    lines += ["", "## Fitness", "", "![fitness](report_fitness.png)", ""]
    top = [r for r in scored if r.kind == "proposal"][:3]
    beta = plot_shapes(top, reference_shape, run_dir / "report_shapes.png") if top else None
    if beta is not None:
        lines += ["## Top losses beside dpo", "",
                  f"Drawn at beta = {beta:g}, the beta the run trained with (recorded at "
                  "screening).", "", "![shapes](report_shapes.png)", ""]
    elif top:
        lines += ["No loss shapes were recorded in this run (it predates recorded shapes).",
                  ""]
    for r in top:
        lines += [f"### {r.id} {r.name} (fitness {format_fitness(r.fitness)})", "",
                  r.thought or "", "", "```python", (r.code or "").strip(), "```", ""]
    lines += lineage.report_section(rows, duels, run_dir, config.discovery.self_improve)
    lines += fidelity.report_section(rows, stages)
    failures = [r for r in rows if r.status in UNSCORED]
    if failures:
        lines += ["## Rejected and failed", "", "| id | status | stage | reason |",
                  "|---|---|---|---|"]
        for r in failures:
            reason = (r.reason or "").replace("|", "/")[:160]
            lines.append(f"| {r.id} | {r.status} | {r.stage or '-'} | {reason} |")
    lines += heldout_section(heldout, run_dir)
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def heldout_section(rows: list[HeldoutRow], run_dir: Path) -> list[str]:
    """The "Held-out evaluation" section: each protocol's own lines (selfdisco.heldout);
    nothing when `selfdisco heldout` has not measured a point."""
    if not rows:
        return []
    # A protocol's caveat (metrics["note"], e.g. a self-judged pairwise) opens the section.
    notes = sorted({r.metrics["note"] for r in rows if r.metrics.get("note")})
    lines = ["", "## Held-out evaluation", "",
             *(line for n in notes for line in (f"**{n[0].upper()}{n[1:]}**", "")),
             "Measured by `selfdisco heldout` after discovery, with training seeds the search "
             "never used, on evaluations it never saw.", ""]
    for protocol in dict.fromkeys(r.protocol for r in rows):
        own = [r for r in rows if r.protocol == protocol]
        hook = protocol_hook(protocol, "report_lines") if protocol in PROTOCOLS.targets else None
        lines += (hook(own, run_dir) if hook else
                  [f"### {protocol}", "", f"{len(own)} points recorded (this selfdisco has no "
                   "report for the protocol).", ""])
    return lines


def fitness_rule(scored: list[Row]) -> list[str]:
    """What a KL-aware fitness measured, from the rows' metrics (nothing for other tasks)."""
    budgets = {r.metrics.get("kl_budget") for r in scored} - {None, 0}
    weights = {r.metrics.get("kl_weight") for r in scored} - {None, 0}
    if len(budgets) == 1:
        budget = budgets.pop()
        if all(r.metrics.get("fitness_version", 1) >= 2 for r in scored
               if r.metrics.get("kl_budget")):
            return [f"Fitness: the reward at a KL budget of {budget:g} nats (a policy past it "
                    "is shrunk back to it and one under it grown to it by scaling its LoRA "
                    "delta; KL by the exact per-token estimate, its noise in the standard "
                    "error); the KL column is the trained policy's own."]
        return [f"Fitness: the reward at a KL budget of {budget:g} nats (a policy past "
                "it is shrunk back to it by scaling its LoRA delta, one under it is read at "
                "its own KL); the KL column is the trained policy's own."]
    if len(weights) == 1:
        return [f"Fitness: reward - {weights.pop():g} x KL (nats)."]
    return []


def _ranking(scored: list[Row], comparison: stats.Comparison | None) -> list[str]:
    """The table of scored rows, best fitness first, ties with the best and wins over dpo
    marked, and the statistics they rest on."""
    lines = ["## Ranking", ""]
    if comparison is None:
        return lines + ["No candidate was scored.", ""]
    seeds = max((len(stats.seed_scores(r)) for r in scored if r.code), default=1)
    lines += [f"Sorted by fitness; **=** marks the candidates {stats.TIE_RULE}, so their order "
              f"among themselves is not established; **>** marks those {stats.BETTER_RULE}. "
              "A difference is read seed by seed over the training seeds both losses share and "
              "prompt by prompt (a two-way seed x prompt standard error; vs dpo and vs best "
              "show mean ± s.e.); ~ marks an unpaired one. Loss-by-seed interaction: "
              f"{stats.interaction_source(comparison.interaction)}. The stderr column is the "
              "row's own (seed variance: "
              f"{stats.seed_variance_source(seeds, comparison.pooled)}).", "",
              "| tie | > dpo | id | name | generation | fitness | stderr | vs dpo | vs best | KL |"
              " proposer |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in scored:
        kl = r.metrics.get("kl")
        mark = " (cached)" if r.metrics.get("cached_from") else ""
        kl_text = format_kl(kl if isinstance(kl, float) else None)
        to_dpo = format_difference(comparison.to_reference.get(r.id))
        to_best = ("best" if r is comparison.best
                   else format_difference(comparison.to_best.get(r.id)))
        lines.append(f"| {'=' if r.id in comparison.tied else ''} | "
                     f"{'>' if r.id in comparison.better else ''} | {r.id}{mark} | {r.name} | "
                     f"{r.generation} | {format_fitness(r.fitness)} | "
                     f"{format_stderr(stats.row_stderr(r, comparison.pooled))} | {to_dpo} | "
                     f"{to_best} | {kl_text} | {r.proposer or '-'} |")
    lines += ["", f"Tied with the best ({comparison.best.id}): "
              + ", ".join(sorted(comparison.tied)) + ".", verdict(comparison)]
    lines += fitness_rule(scored)
    with_kl = [r for r in scored if isinstance(r.metrics.get("kl"), int | float)
               and math.isfinite(r.metrics["kl"])]
    r_kl = stats.correlation([r.fitness for r in with_kl],
                             [float(r.metrics["kl"]) for r in with_kl])
    if r_kl is not None:
        lines.append(f"Correlation of fitness with KL across the {len(with_kl)} scored rows: "
                     f"r = {r_kl:.2f}.")
    return lines + [""]


def verdict(comparison: stats.Comparison) -> str:
    """The run's finding in words: which losses beat dpo after the correction, or that none
    does, and that a win still needs the confirmatory step."""
    others = [id for id, d in comparison.to_reference.items() if d is not None]
    if not others:
        return "No comparison with dpo: dpo, or every other loss, was not scored."
    if not comparison.better:
        return (f"No loss is better than dpo at a family-wise level of {stats.FAMILY_ALPHA:g} "
                f"(Holm over {len(others)} comparisons).")
    return (f"Better than dpo at a family-wise level of {stats.FAMILY_ALPHA:g} (Holm over "
            f"{len(others)} comparisons): {', '.join(sorted(comparison.better))}. The search "
            "chose among these on the same prompts and seeds; confirm the winner on data it "
            "never saw: selfdisco heldout RUN --protocols confirm.")

"""A Markdown summary of a run, with plots: fitness per candidate and best so far per
generation, and the top losses' shapes beside dpo, as screening recorded them (no loss code runs
here)."""

from __future__ import annotations

from pathlib import Path

from selfdisco.archive import REFERENCE_SHAPE, Archive, Row
from selfdisco.config import read_run_config
from selfdisco.events import UNSCORED
from selfdisco.formatting import format_number


def plot_fitness(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    baseline = [r for r in rows if r.generation == 0 and r.status == "scored"]
    proposals = [r for r in rows if r.generation > 0 and r.status == "scored"]
    ax.scatter([0] * len(baseline), [r.fitness for r in baseline], marker="s", color="grey",
               label="burn-in and base")
    ax.scatter([r.generation for r in proposals], [r.fitness for r in proposals],
               label="candidates")
    generations = sorted({r.generation for r in rows})
    best, curve = None, []
    for g in generations:
        for r in rows:
            if r.generation == g and r.status == "scored":
                best = r.fitness if best is None else max(best, r.fitness)
        curve.append(best)
    ax.step(generations, curve, where="post", color="black", label="best so far")
    ax.set_xlabel("generation (0 = burn-in)")
    ax.set_ylabel("fitness")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shapes(rows: list[Row], reference: dict | None, path: Path) -> float | None:
    """Loss and slope against rho for the rows' recorded shapes and dpo's; returns the beta
    they were recorded at, or None when no row has a shape (a run from before shapes were
    recorded)."""
    from selfdisco.losses.curves import plot_shapes as plot
    from selfdisco.losses.shape import LossShape

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
    reference_shape = archive.get_meta(REFERENCE_SHAPE)
    archive.close()
    scored = sorted((r for r in rows if r.status == "scored"), key=lambda r: -r.fitness)
    counts: dict[str, int] = {}
    for r in rows:
        if r.kind == "proposal":
            counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"# selfdisco run {run_dir.name}", "",
             f"Task **{config.task.name}**, preset **{config.preset}**, policy "
             f"`{config.models.policy}`, proposer `{config.proposer_model}` "
             f"({config.server.proposer}), seed {config.seed}.", "",
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
                  f"was the policy trained under {proposer['id']} (fitness "
                  f"{format_number(proposer['fitness'])}).", ""]
    lines += ["## Ranking", "",
              "| rank | id | name | generation | fitness | stderr | KL | proposer |",
              "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(scored, 1):
        kl = r.metrics.get("kl")
        mark = " (cached)" if r.metrics.get("cached_from") else ""
        kl_text = format_number(kl if isinstance(kl, float) else None, 3)
        lines.append(f"| {i} | {r.id}{mark} | {r.name} | {r.generation} | "
                     f"{format_number(r.fitness)} | {format_number(r.stderr)} | {kl_text} | "
                     f"{r.proposer or '-'} |")
    plot_fitness(rows, run_dir / "report_fitness.png")
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
        lines += [f"### {r.id} {r.name} (fitness {format_number(r.fitness)})", "",
                  r.thought or "", "", "```python", (r.code or "").strip(), "```", ""]
    failures = [r for r in rows if r.status in UNSCORED]
    if failures:
        lines += ["## Rejected and failed", "", "| id | status | stage | reason |",
                  "|---|---|---|---|"]
        for r in failures:
            reason = (r.reason or "").replace("|", "/")[:160]
            lines.append(f"| {r.id} | {r.status} | {r.stage or '-'} | {reason} |")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path

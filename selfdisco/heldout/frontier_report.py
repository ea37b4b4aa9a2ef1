"""The frontier's subsection of the report: the plot, the table of points, the dominance
statements and the paper's IMDb figures beside ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfdisco.formatting import format_fitness
from selfdisco.heldout.frontier import DOMINANCE_RULE, FrontierPoint, dominance, summarise

PLOT_FILE = "heldout_frontier.png"

# /work/shared/PAPER.md, section 5: imdb_results_2.csv of SakanaAI/DiscoPOP, means over 10 seeds.
PAPER_IMDB = [
    ("dpo", 0.05, 0.972, 0.99), ("dpo", 0.1, 0.964, 0.55), ("dpo", 0.25, 0.928, 0.18),
    ("dpo", 1.0, 0.852, 0.07), ("lrml", 0.05, 0.975, 0.66), ("lrml", 0.1, 0.964, 0.33),
]


def paper_note(run_dir: Path) -> str:
    """What differs between the paper's IMDb experiment and this run's frontier."""
    from selfdisco.config import read_run_config

    config = read_run_config(run_dir)
    scorer = str(config.task.options.get("scorer", "vader"))
    reward = ("the VADER compound score in [-1, 1]" if scorer == "vader"
              else f"the classifier {scorer}")
    return ("The paper (IMDb positive sentiment): policy GPT-2 fine-tuned on IMDb (gpt2-imdb), "
            "reward a sentiment classifier's positive probability on 60-token samples, KL per "
            "token, full fine-tuning, 10 seeds, beta from 0.01 to 5. Here: policy "
            f"`{config.models.policy}` (SmolLM2-135M-Instruct on the cpu preset) with LoRA and "
            f"the run's short recipe, reward {reward}, KL summed over the sampled continuation "
            "(nats per sequence), a few seeds. So compare shapes (which loss reaches more "
            "reward at the same KL), not the numbers.")


def plot_frontier(summary: list[FrontierPoint], path: Path) -> None:
    """Reward against KL, one line per loss through its betas, with standard errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for loss in dict.fromkeys(p.loss_id for p in summary):
        own = sorted((p for p in summary if p.loss_id == loss), key=lambda p: p.kl)
        ax.errorbar([p.kl for p in own], [p.reward for p in own],
                    xerr=[p.kl_se or 0.0 for p in own], yerr=[p.reward_se or 0.0 for p in own],
                    fmt="o-", capsize=3, label=loss)
        for p in own:
            ax.annotate(f"{p.beta:g}", (p.kl, p.reward), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel("KL(policy || reference), nats per sequence")
    ax.set_ylabel("mean reward on held-out prompts")
    ax.set_title("reward vs KL (labels: beta; bars: 1 standard error)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier_section(rows: list[Any], run_dir: Path) -> list[str]:
    """Markdown lines for the frontier's rows of a run."""
    summary = summarise(rows)
    lines = ["### Reward-vs-KL frontier (sentiment)", ""]
    if not summary:
        lines += ["No frontier point has been measured yet.", ""]
    else:
        plot_frontier(summary, run_dir / PLOT_FILE)
        seeds = sorted({r.seed for r in rows})
        lines += [f"Each loss trained at each beta with {len(seeds)} fresh training seed(s) "
                  f"({', '.join(map(str, seeds))}; none is a seed discovery trained with), then "
                  "scored on the task's held-out openings. Points are means over seeds; "
                  "standard errors include the between-seed variance.", "",
                  f"![reward vs KL]({PLOT_FILE})", "",
                  "| loss | beta | seeds | reward | KL |", "|---|---|---|---|---|"]
        names = {r.loss_id: r.metrics.get("loss_name") for r in rows}
        for p in summary:
            name = names.get(p.loss_id)
            label = p.loss_id if name in (None, p.loss_id) else f"{p.loss_id} ({name})"
            lines.append(f"| {label} | {p.beta:g} | {p.seeds} | "
                         f"{format_fitness(p.reward, p.reward_se)} | "
                         f"{format_fitness(p.kl, p.kl_se)} |")
        lines += ["", f"Dominance rule: {DOMINANCE_RULE}.", ""]
        lines += [f"- **{loss}**: {verdict}" for loss, verdict in dominance(summary).items()]
        lines.append("")
    failed = [r for r in rows if r.status != "done"]
    if failed:
        lines += [f"Failed points ({len(failed)}): " + "; ".join(
            f"{r.loss_id} beta {r.beta:g} seed {r.seed}: {r.metrics.get('reason', '?')}"
            for r in failed) + ".", ""]
    lines += ["Beside the paper's figures (reward / KL):", "",
              "| paper loss | beta | reward | KL |", "|---|---|---|---|"]
    lines += [f"| {loss} | {beta:g} | {reward:.3f} | {kl:.2f} |"
              for loss, beta, reward, kl in PAPER_IMDB]
    return lines + ["", paper_note(run_dir), ""]

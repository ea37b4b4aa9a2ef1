"""The reward-vs-KL frontier: the paper's IMDb protocol on the sentiment task.

Each loss is trained at every beta with every fresh seed (the run's recipe otherwise), and the
trained policy's mean reward and KL(policy || reference) on the held-out openings are recorded.
Per (loss, beta) the seeds are averaged; the standard errors include the between-seed variance
(stats.replicate_stderr, pooled over the (loss, beta) groups below 5 seeds). DOMINANCE_RULE
says when a loss's curve lies under another's. The report's subsection (report_lines) draws
the plot, the table of points, the dominance statements and the paper's IMDb figures beside
ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.config import read_run_config
from selfdisco.errors import UserError
from selfdisco.formatting import format_fitness, format_kl
from selfdisco.heldout import HeldoutContext, Point
from selfdisco.heldout.session import measured_seconds
from selfdisco.rundir.events import HELDOUT_DONE, HELDOUT_FAILED, SCORED
from selfdisco.tasks.sentiment import SentimentSettings

NAME = "frontier"
DEFAULT_BETAS = (0.025, 0.05, 0.1, 0.25)  # the cpu recipe; the paper swept 0.01 to 5
DOMINANCE_RULE = (  # "beyond noise" is the tie rule's: more than stats.TIE_SE standard errors
    f"a point (one beta, mean over seeds) is dominated when another loss has a point with "
    f"higher reward by more than {stats.TIE_SE:g} standard errors of the difference (the two "
    f"points' errors combined, unpaired) at a KL no higher (mean KL less than or equal); a "
    f"loss is dominated when every one of its points is, partly dominated when some are")


@dataclass(frozen=True)
class FrontierPoint:
    """One (loss, beta): reward and KL means over its seeds with their standard errors."""

    loss_id: str
    beta: float
    seeds: int
    reward: float
    reward_se: float | None
    kl: float
    kl_se: float | None


def points(ctx: HeldoutContext) -> list[Point]:
    return [Point(NAME, loss.id, beta, seed) for loss in ctx.losses for beta in ctx.betas
            for seed in ctx.seeds]


def seconds_per_point(archive: Any) -> float | None:
    """A point costs what a candidate of the run cost: data, training and scoring."""
    seconds = measured_seconds(archive)
    return sum(seconds.values()) if seconds else None


def task_options() -> dict:
    """kl_budget = 0 where the task has that option: the full policy's reward and KL are the
    point, so no extra budget evaluation runs."""
    names = {f.name for f in dataclasses.fields(SentimentSettings)}
    return {"kl_budget": 0} if "kl_budget" in names else {}


def run(ctx: HeldoutContext) -> None:
    """Measure every point not yet recorded (see the module docstring)."""
    if ctx.config.task.name != "sentiment":
        raise UserError(f"the frontier protocol trains on the sentiment task (reward and KL); "
                        f"this run's task is {ctx.config.task.name}: choose other --protocols")
    options = task_options()
    losses = {loss.id: loss for loss in ctx.losses}
    for point in points(ctx):
        if ctx.done(point):
            continue
        loss = losses[point.loss_id]
        result = ctx.evaluate(point, loss.code, options)
        if result.status == SCORED and "reward" in result.metrics:
            m = result.metrics
            metrics = {key: m.get(key) for key in ("reward", "reward_stderr", "kl", "kl_stderr")}
            metrics.update(loss_name=loss.name, fitness=result.fitness,
                           timings=dict(result.timings),
                           summary=f"reward {format_fitness(m['reward'], m.get('reward_stderr'))}"
                                   f", KL {format_kl(m.get('kl') or 0.0, m.get('kl_stderr'))}")
            ctx.record(point, metrics)
        else:
            ctx.record(point, {"loss_name": loss.name, "cause": result.cause or "task",
                               "timings": dict(result.timings),
                               "reason": result.reason or "scored without a reward"},
                       status=HELDOUT_FAILED)


def summarise(rows: list[Any]) -> list[FrontierPoint]:
    """Per (loss, beta) the seed means of the recorded points that were measured, in the order
    losses first appear, betas ascending."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in rows:
        if row.status == HELDOUT_DONE and isinstance(row.metrics.get("reward"), int | float):
            groups.setdefault((row.loss_id, row.beta), []).append(row.metrics)
    reward = {key: [(m["reward"], m.get("reward_stderr")) for m in ms]
              for key, ms in groups.items()}
    kl = {key: [(m.get("kl") or 0.0, m.get("kl_stderr")) for m in ms]
          for key, ms in groups.items()}
    pooled_reward = stats.pooled_seed_variance(reward.values())
    pooled_kl = stats.pooled_seed_variance(kl.values())
    order = list(dict.fromkeys(loss for loss, _ in groups))
    out = []
    for key in sorted(groups, key=lambda k: (order.index(k[0]), k[1])):
        rewards, kls = reward[key], kl[key]
        out.append(FrontierPoint(
            loss_id=key[0], beta=key[1], seeds=len(rewards),
            reward=stats.mean([r for r, _ in rewards]),
            reward_se=stats.replicate_stderr(rewards, pooled_reward),
            kl=stats.mean([k for k, _ in kls]),
            kl_se=stats.replicate_stderr(kls, pooled_kl)))
    return out


def dominated_by(point: FrontierPoint, others: list[FrontierPoint]) -> list[FrontierPoint]:
    """The points of other losses that dominate `point` (DOMINANCE_RULE)."""
    found = []
    for other in others:
        if other.loss_id == point.loss_id or other.kl > point.kl:
            continue
        se = ((point.reward_se or 0.0) ** 2 + (other.reward_se or 0.0) ** 2) ** 0.5
        if other.reward - point.reward > stats.TIE_SE * se:
            found.append(other)
    return found


def dominance(summary: list[FrontierPoint]) -> dict[str, str]:
    """Loss id -> one sentence: not dominated, partly dominated or dominated, and by whom."""
    verdicts = {}
    for loss in dict.fromkeys(p.loss_id for p in summary):
        own = [p for p in summary if p.loss_id == loss]
        beaten = {p.beta: dominated_by(p, summary) for p in own}
        hit = [beta for beta, by in beaten.items() if by]
        by = sorted({o.loss_id for beta in hit for o in beaten[beta]})
        if not hit:
            verdicts[loss] = "not dominated"
        elif len(hit) == len(own):
            verdicts[loss] = f"dominated (every point, by {', '.join(by)})"
        else:
            betas = ", ".join(f"{b:g}" for b in hit)
            verdicts[loss] = (f"partly dominated ({len(hit)} of {len(own)} points: beta "
                              f"{betas}; by {', '.join(by)})")
    return verdicts


def report_lines(rows: list[Any], run_dir: Path) -> list[str]:
    return frontier_section(rows, Path(run_dir))


PLOT_FILE = "heldout_frontier.png"

# /work/shared/PAPER.md, section 5: imdb_results_2.csv of SakanaAI/DiscoPOP, means over 10 seeds.
PAPER_IMDB = [
    ("dpo", 0.05, 0.972, 0.99), ("dpo", 0.1, 0.964, 0.55), ("dpo", 0.25, 0.928, 0.18),
    ("dpo", 1.0, 0.852, 0.07), ("lrml", 0.05, 0.975, 0.66), ("lrml", 0.1, 0.964, 0.33),
]


def paper_note(run_dir: Path) -> str:
    """What differs between the paper's IMDb experiment and this run's frontier."""
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
    # lazy: loads matplotlib
    import matplotlib

    matplotlib.use("Agg")
    # lazy: loads matplotlib
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
                         f"{format_kl(p.kl, p.kl_se)} |")
        lines += ["", f"Dominance rule: {DOMINANCE_RULE}.", ""]
        lines += [f"- **{loss}**: {verdict}" for loss, verdict in dominance(summary).items()]
        lines.append("")
    failed = [r for r in rows if r.status != HELDOUT_DONE]
    if failed:
        lines += [f"Failed points ({len(failed)}): " + "; ".join(
            f"{r.loss_id} beta {r.beta:g} seed {r.seed}: {r.metrics.get('reason', '?')}"
            for r in failed) + ".", ""]
    lines += ["Beside the paper's figures (reward / KL):", "",
              "| paper loss | beta | reward | KL |", "|---|---|---|---|"]
    # quoted at the precision PAPER_IMDB has them, not formatting's (more digits would be made up)
    lines += [f"| {loss} | {beta:g} | {reward:.3f} | {kl:.2f} |"
              for loss, beta, reward, kl in PAPER_IMDB]
    return lines + ["", paper_note(run_dir), ""]

"""The reward-vs-KL frontier: the paper's IMDb protocol on the sentiment task.

Each loss is trained at every beta with every fresh seed (the run's recipe otherwise), and each
point (loss, beta, seed) records its scaling path: the trained policy and the policy shrunk
along its LoRA delta toward each common KL value (the task option kl_targets; budget.py), each
with its per-prompt rewards and KL, on the same prompts and sampling seeds. At a common KL a
loss is read seed by seed, prompt by prompt, by interpolation in KL along the paths of its
largest beta that reaches that KL on every seed (the policy trained nearest over it, the least
shrunk; chosen by KL alone, never by reward). Two losses are compared at a common KL on the
seeds both were read on (stats.seed_blocked_difference): a seed effect common to every loss,
which moves KL and reward together, cancels. The noise of the two KL estimates that set each
interpolation is added to the variance (budget.Reading.kl_variance, the delta method): the
spread of the per-seed differences holds it too, but estimated from two or three seeds it is
rough, and counting it twice errs toward making no claim. DOMINANCE_RULE decides, corrected for
every claim the report can state (Holm). Points recorded before paths were kept are analysed as
they were recorded (LEGACY_RULE: per-beta means, unpaired, uncorrected), and the report says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path
from typing import Any

from selfdisco import stats
from selfdisco.config import read_run_config
from selfdisco.errors import UserError
from selfdisco.formatting import format_fitness, format_kl
from selfdisco.heldout import HeldoutContext, Point
from selfdisco.heldout import session as heldout_session
from selfdisco.rundir.events import HELDOUT_DONE, HELDOUT_FAILED, SCORED
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.budget import PathPoint, Reading, parse_kl_targets, read_at

NAME = "frontier"
DEFAULT_BETAS = (0.025, 0.05, 0.1, 0.25)  # the cpu recipe; the paper swept 0.01 to 5
# The common KL values, as shares of the run's kl_budget (cpu: 3 and 6 nats): the budget is the
# KL the search compared losses at, and the cpu recipe's fresh seeds land near 3 and near 7
# nats at beta 0.1, so half of it is reached by nearly every trained policy and all of it by the
# lower betas. Each costs one more measurement of a point (sampling and the KL passes) where it
# lies under the trained policy's KL. --option kl_targets=1.5,3,6 replaces them.
TARGET_SHARES = (0.5, 1.0)
FALLBACK_TARGETS = (3.0, 6.0)  # nats, for a run without a budget: the cpu budget's grid
DOMINANCE_RULE = (
    f"at each common KL, loss A beats loss B when A's reward minus B's, read seed by seed at "
    f"that KL and paired by prompt, is above 0 at a family-wise level of "
    f"{stats.FAMILY_ALPHA:g} (one-sided; Holm over every ordered pair of losses at every common "
    f"KL, each a claim this section can state; a difference whose standard error leaves out "
    f"the training noise makes no claim); a loss is dominated when it is beaten at every "
    f"common KL it was read at, partly dominated when at some")
LEGACY_RULE = (  # the rule before paths were recorded; "beyond noise" is stats.TIE_SE
    f"a point (one beta, mean over seeds) is dominated when another loss has a point with "
    f"higher reward by more than {stats.TIE_SE:g} standard errors of the difference (the two "
    f"points' errors combined, unpaired) at a KL no higher (mean KL less than or equal); a "
    f"loss is dominated when every one of its points is, partly dominated when some are")


def points(ctx: HeldoutContext) -> list[Point]:
    return [Point(NAME, loss.id, beta, seed) for loss in ctx.losses for beta in ctx.betas
            for seed in ctx.seeds]


def seconds_per_point(archive: Any) -> float | None:
    """The mean of the measured points (training and the path's measurements); before the
    first, what a candidate of the run cost (less than a point: no path)."""
    return heldout_session.seconds_per_point(archive, NAME)


def default_targets(config: Any) -> tuple[float, ...]:
    """TARGET_SHARES of the run's kl_budget; FALLBACK_TARGETS for a run without one."""
    settings = get_task("sentiment").settings(
        TaskContext(preset=config.preset, options=dict(config.task.options)))
    budget = settings.kl_budget
    return tuple(budget * share for share in TARGET_SHARES) if budget else FALLBACK_TARGETS


def task_options(config: Any, options: dict[str, str] | None = None) -> dict:
    """kl_budget = 0 (the full policy's reward and KL are the point, no budget evaluation) and
    kl_targets: the protocol option kl_targets, else default_targets."""
    text = (options or {}).get("kl_targets")
    if text is None:
        text = ",".join(f"{t:g}" for t in default_targets(config))
    try:
        parse_kl_targets(text)
    except ValueError as err:
        raise UserError(f"option kl_targets={text!r}: {err}; give KL values in nats separated "
                        "by commas, e.g. 3,6") from None
    return {"kl_budget": 0, "kl_targets": text}


def run(ctx: HeldoutContext) -> None:
    """Measure every point not yet recorded (see the module docstring)."""
    if ctx.config.task.name != "sentiment":
        raise UserError(f"the frontier protocol trains on the sentiment task (reward and KL); "
                        f"this run's task is {ctx.config.task.name}: choose other --protocols")
    options = task_options(ctx.config, ctx.options)
    get_task("sentiment").check_options(ctx.config.preset, {**ctx.config.task.options, **options})
    losses = {loss.id: loss for loss in ctx.losses}
    for point in points(ctx):
        if ctx.done(point):
            continue
        loss = losses[point.loss_id]
        result = ctx.evaluate(point, loss.code, options)
        if result.status == SCORED and "reward" in result.metrics:
            m = result.metrics
            metrics = {key: m.get(key) for key in ("reward", "reward_stderr", "kl", "kl_stderr")}
            metrics.update({key: m[key] for key in ("path", "kl_targets") if key in m})
            metrics.update(loss_name=loss.name, fitness=result.fitness,
                           timings=dict(result.timings),
                           seconds=round(sum(result.timings.values()), 2),
                           summary=f"reward {format_fitness(m['reward'], m.get('reward_stderr'))}"
                                   f", KL {format_kl(m.get('kl') or 0.0, m.get('kl_stderr'))}")
            ctx.record(point, metrics)
        else:
            ctx.record(point, {"loss_name": loss.name, "cause": result.cause or "task",
                               "timings": dict(result.timings),
                               "reason": result.reason or "scored without a reward"},
                       status=HELDOUT_FAILED)


# ---- reading the paths at common KL values ------------------------------------------------

Paths = dict[str, dict[float, dict[int, list[PathPoint]]]]  # loss -> beta -> seed -> path


def seed_paths(rows: list[Any]) -> Paths:
    """The recorded paths of the measured rows, losses in the order they first appear; rows
    without one (recorded before paths were kept) are left out."""
    paths: Paths = {}
    for row in rows:
        path = row_path(row)
        if path:
            paths.setdefault(row.loss_id, {}).setdefault(row.beta, {})[row.seed] = path
    return paths


def row_path(row: Any) -> list[PathPoint] | None:
    """The row's path points; None for a failed row or one without a (readable) path."""
    records = row.metrics.get("path")
    if row.status != HELDOUT_DONE or not isinstance(records, list) or not records:
        return None
    try:
        return [PathPoint.from_json(r) for r in records]
    except ValueError:
        return None


def common_targets(rows: list[Any]) -> list[float]:
    """Every KL value the rows' paths were measured toward, ascending."""
    found = set()
    for row in rows:
        if row_path(row):
            values = row.metrics.get("kl_targets") or []
            found.update(float(v) for v in values if isinstance(v, int | float) and v > 0)
    return sorted(found)


@dataclass(frozen=True)
class LossAtKL:
    """One loss read at one common KL: the beta whose paths were read, each seed's reading
    (per prompt rewards at that KL) and their mean with its standard error (seed x prompt, plus
    the KL noise)."""

    loss_id: str
    target: float
    beta: float
    readings: dict[int, Reading]
    reward: float
    reward_se: float | None


def read_losses(paths: Paths, targets: list[float]) -> list[LossAtKL]:
    """Each loss at each target it reaches: on its largest beta whose every seed's path reaches
    it (read_at); losses in order, targets ascending."""
    found: list[tuple[str, float, float, dict[int, Reading]]] = []
    for loss, betas in paths.items():
        for target in targets:
            for beta in sorted(betas, reverse=True):
                readings = {seed: read_at(path, target) for seed, path in betas[beta].items()}
                if all(r is not None for r in readings.values()):
                    found.append((loss, target, beta, readings))
                    break
    pooled = stats.pooled_seed_variance(
        [(r.reward, stats.mean_stderr(r.values)[1]) for r in by_seed.values()]
        for *_, by_seed in found)
    return [LossAtKL(loss, target, beta, by_seed, stats.mean([r.reward for r in by_seed.values()]),
                     _level_stderr(list(by_seed.values()), pooled))
            for loss, target, beta, by_seed in found]


def _level_stderr(readings: list[Reading], pooled: float | None) -> float | None:
    """The standard error of a loss's mean reading over seeds: stats.replicate_stderr (the
    two-way seed x prompt analysis from two seeds) plus the KL noise of the readings."""
    replicates = [(r.reward, stats.mean_stderr(r.values)[1]) for r in readings]
    scores = [r.values for r in readings]
    same = len({len(s) for s in scores}) == 1 and len(scores[0]) >= 2
    se = stats.replicate_stderr(replicates, pooled, scores if same else None)
    if se is None:
        return None
    return math.sqrt(se ** 2 + sum(r.kl_variance for r in readings) / len(readings) ** 2)


def with_kl_noise(difference: stats.BlockedDifference, variance: float,
                  df: int | None) -> stats.BlockedDifference:
    """The difference with the KL estimates' share of variance added as the part "kl", its
    degrees of freedom by Satterthwaite (a part without df counts as known)."""
    if difference.stderr is None or not variance > 0:
        return difference
    base = difference.stderr ** 2
    total = base + variance
    spread = ((base ** 2 / difference.df if difference.df and base else 0.0)
              + (variance ** 2 / df if df else 0.0))
    return dataclasses.replace(
        difference, stderr=math.sqrt(total), df=total ** 2 / spread if spread > 0 else None,
        components={**difference.components, "kl": variance},
        basis=f"{difference.basis}; plus the KL estimates' noise in the interpolation (delta "
              "method)")


def paired_difference(a: LossAtKL, b: LossAtKL, interaction: stats.PooledInteraction | None,
                      ) -> stats.BlockedDifference | None:
    """a minus b at their common KL on the seeds both were read on, blocked by seed and paired
    by prompt, plus the KL noise of the readings; None without a shared seed or prompt set."""
    seeds = sorted(set(a.readings) & set(b.readings))
    grids = [[side.readings[s].values for s in seeds] for side in (a, b)]
    if not seeds or len({len(row) for grid in grids for row in grid}) != 1:
        return None
    readings = [side.readings[s] for side in (a, b) for s in seeds]
    dfs = [r.kl_df for r in readings if r.kl_df is not None]
    difference = stats.seed_blocked_difference(*grids, interaction=interaction)
    return with_kl_noise(difference, sum(r.kl_variance for r in readings) / len(seeds) ** 2,
                         min(dfs) if dfs else None)


@dataclass(frozen=True)
class Claim:
    """The claim "`better` beats `worse` at KL `target`": the paired difference (better minus
    worse) and its p-value adjusted over the family (Holm; 1 where no claim can be made)."""

    target: float
    better: str
    worse: str
    difference: stats.BlockedDifference
    p_adjusted: float

    @property
    def holds(self) -> bool:
        return self.p_adjusted <= stats.FAMILY_ALPHA


def claims(at_kl: list[LossAtKL]) -> list[Claim]:
    """Every ordered pair of losses read at the same common KL, with Holm-adjusted one-sided
    p-values over all of them (DOMINANCE_RULE); the loss-by-seed interaction of each common KL
    is pooled over its losses (stats.pooled_interaction)."""
    found: list[tuple[float, str, str, stats.BlockedDifference, float]] = []
    for target in sorted({x.target for x in at_kl}):
        here = [x for x in at_kl if x.target == target]
        interaction = stats.pooled_interaction(
            {x.loss_id: {s: r.reward for s, r in x.readings.items()} for x in here})
        for a, b in permutations(here, 2):
            d = paired_difference(a, b, interaction)
            if d is None:
                continue
            p = None if d.stderr is None or "seed" in d.omitted else d.p_value()
            found.append((target, a.loss_id, b.loss_id, d, 1.0 if p is None else p))
    adjusted = stats.holm_adjusted([p for *_, p in found])
    return [Claim(target, a, b, d, q)
            for (target, a, b, d, _), q in zip(found, adjusted, strict=True)]


def verdicts(at_kl: list[LossAtKL], found: list[Claim], losses: list[str]) -> dict[str, str]:
    """Loss id -> one sentence: not dominated, partly dominated or dominated, where and by whom."""
    out = {}
    for loss in losses:
        read = sorted(x.target for x in at_kl if x.loss_id == loss)
        beaten = {t: sorted(c.better for c in found if c.worse == loss and c.target == t
                            and c.holds) for t in read}
        hit = [t for t in read if beaten[t]]
        by = ", ".join(sorted({b for t in hit for b in beaten[t]}))
        if not read:
            out[loss] = "not compared (no beta reaches a common KL on every seed)"
        elif not hit:
            out[loss] = "not dominated"
        elif len(hit) == len(read):
            out[loss] = f"dominated (at every common KL it was read at, by {by})"
        else:
            kls = ", ".join(f"{t:g}" for t in hit)
            out[loss] = (f"partly dominated (at KL {kls}: {len(hit)} of the {len(read)} common "
                         f"KLs it was read at; by {by})")
    return out


# ---- points recorded before paths were kept -----------------------------------------------

@dataclass(frozen=True)
class FrontierPoint:
    """One (loss, beta): reward and KL of the trained policies, means over its seeds with their
    standard errors."""

    loss_id: str
    beta: float
    seeds: int
    reward: float
    reward_se: float | None
    kl: float
    kl_se: float | None


def summarise(rows: list[Any]) -> list[FrontierPoint]:
    """Per (loss, beta) the seed means of the trained policies of the measured rows, in the
    order losses first appear, betas ascending."""
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
    """The points of other losses that dominate `point` under LEGACY_RULE."""
    found = []
    for other in others:
        if other.loss_id == point.loss_id or other.kl > point.kl:
            continue
        se = ((point.reward_se or 0.0) ** 2 + (other.reward_se or 0.0) ** 2) ** 0.5
        if other.reward - point.reward > stats.TIE_SE * se:
            found.append(other)
    return found


def dominance(summary: list[FrontierPoint]) -> dict[str, str]:
    """Loss id -> one sentence under LEGACY_RULE: not dominated, partly dominated or dominated,
    and by whom."""
    out = {}
    for loss in dict.fromkeys(p.loss_id for p in summary):
        own = [p for p in summary if p.loss_id == loss]
        beaten = {p.beta: dominated_by(p, summary) for p in own}
        hit = [beta for beta, by in beaten.items() if by]
        by = sorted({o.loss_id for beta in hit for o in beaten[beta]})
        if not hit:
            out[loss] = "not dominated"
        elif len(hit) == len(own):
            out[loss] = f"dominated (every point, by {', '.join(by)})"
        else:
            betas = ", ".join(f"{b:g}" for b in hit)
            out[loss] = (f"partly dominated ({len(hit)} of {len(own)} points: beta "
                         f"{betas}; by {', '.join(by)})")
    return out


# ---- the report's subsection --------------------------------------------------------------

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


def _pyplot() -> Any:
    # lazy: loads matplotlib
    import matplotlib

    matplotlib.use("Agg")
    # lazy: loads matplotlib
    import matplotlib.pyplot as plt

    return plt


def plot_paths(paths: Paths, at_kl: list[LossAtKL], path: Path) -> None:
    """Reward against KL per loss: each seed's scaling paths (thin) and the loss read at the
    common KLs (points, bars 1 standard error, labels the beta read)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, (loss, betas) in enumerate(paths.items()):
        color = f"C{index % 10}"
        for seeds in betas.values():
            for measured in seeds.values():
                ordered = sorted(measured, key=lambda p: p.kl)
                ax.plot([p.kl for p in ordered], [p.reward for p in ordered], "-", color=color,
                        alpha=0.3, linewidth=0.8)
        own = sorted((x for x in at_kl if x.loss_id == loss), key=lambda x: x.target)
        ax.errorbar([x.target for x in own], [x.reward for x in own],
                    yerr=[x.reward_se or 0.0 for x in own], fmt="o-", color=color, capsize=3,
                    linewidth=2, label=loss)
        for x in own:
            ax.annotate(f"{x.beta:g}", (x.target, x.reward), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
    ax.set_xlabel("KL(policy || reference), nats per sequence")
    ax.set_ylabel("mean reward on held-out prompts")
    ax.set_title("reward vs KL (thin: each seed's scaling path; points: common KLs, labels: "
                 "beta read, bars: 1 s.e.)", fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_frontier(summary: list[FrontierPoint], path: Path) -> None:
    """Reward against KL, one line per loss through its betas, with standard errors (points
    recorded without paths)."""
    plt = _pyplot()
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


def _label(loss: str, names: dict[str, Any]) -> str:
    name = names.get(loss)
    return loss if name in (None, loss) else f"{loss} ({name})"


def _trained_table(summary: list[FrontierPoint], names: dict[str, Any]) -> list[str]:
    lines = ["| loss | beta | seeds | reward | KL |", "|---|---|---|---|---|"]
    return lines + [f"| {_label(p.loss_id, names)} | {p.beta:g} | {p.seeds} | "
                    f"{format_fitness(p.reward, p.reward_se)} | {format_kl(p.kl, p.kl_se)} |"
                    for p in summary]


def path_lines(rows: list[Any], paths: Paths, run_dir: Path) -> list[str]:
    """The analysis at common KL values of the rows that recorded paths (DOMINANCE_RULE)."""
    measured = [r for r in rows if row_path(r)]
    targets = common_targets(measured)
    at_kl = read_losses(paths, targets)
    found = claims(at_kl)
    names = {r.loss_id: r.metrics.get("loss_name") for r in rows}
    plot_paths(paths, at_kl, run_dir / PLOT_FILE)
    seeds = sorted({r.seed for r in measured})
    kls = ", ".join(f"{t:g}" for t in targets)
    lines = [f"Each loss trained at each beta with {len(seeds)} fresh training seed(s) "
             f"({', '.join(map(str, seeds))}; none is a seed discovery trained with). Each "
             f"trained policy was scored on the task's held-out openings, and again shrunk along "
             f"its LoRA scaling path toward the common KL values {kls} nats, on the same prompts "
             "and sampling seeds. At a common KL a loss is read on its largest beta whose every "
             "seed reaches it, seed by seed, by interpolation in KL between two measured points "
             "of the path, prompt by prompt.", "",
             f"![reward vs KL]({PLOT_FILE})", "",
             "Reward at each common KL (mean over seeds; the standard error has the seed and "
             "prompt spread and the KL noise of the interpolation):", "",
             "| loss | KL | beta read | seeds | reward |", "|---|---|---|---|---|"]
    lines += [f"| {_label(x.loss_id, names)} | {x.target:g} | {x.beta:g} | {len(x.readings)} | "
              f"{format_fitness(x.reward, x.reward_se)} |" for x in at_kl]
    lines += ["", "Trained policies (mean over seeds, before shrinking):", ""]
    lines += _trained_table(summarise(measured), names)
    shown = [c for c in found if c.difference.mean > 0
             or (c.difference.mean == 0 and c.better < c.worse)]
    lines += ["", f"Paired differences at each common KL (A minus B on the seeds both were read "
              f"on; standard error two-way, seed x prompt, plus the KL noise; p one-sided, "
              f"Holm-adjusted over all {len(found)} ordered comparisons):", "",
              "| KL | A - B | difference | s.e. | df | seeds | Holm p |",
              "|---|---|---|---|---|---|---|"]
    for c in shown:
        d = c.difference
        df = "-" if d.df is None else f"{d.df:.1f}"
        note = " (no claim: training noise unmeasured)" if "seed" in d.omitted else ""
        lines.append(f"| {c.target:g} | {c.better} - {c.worse} | "
                     f"{format_fitness(d.mean, signed=True)} | "
                     f"{format_fitness(d.stderr) if d.stderr is not None else '-'} | {df} | "
                     f"{d.n_seeds} | {c.p_adjusted:.3g}{note} |")
    losses = list(paths)
    lines += ["", f"Dominance rule: {DOMINANCE_RULE}.", ""]
    lines += [f"- **{loss}**: {verdict}" for loss, verdict in verdicts(at_kl, found,
                                                                        losses).items()]
    legacy = [r for r in rows if r.status == HELDOUT_DONE and not row_path(r)]
    if legacy:
        lines += ["", f"{len(legacy)} point(s) recorded before paths were kept are left out of "
                  "this analysis (" + ", ".join(sorted({r.loss_id for r in legacy})) + ")."]
    return lines + [""]


def legacy_lines(rows: list[Any], run_dir: Path) -> list[str]:
    """The rows' per-beta means under LEGACY_RULE, said to be unpaired and uncorrected."""
    summary = summarise(rows)
    plot_frontier(summary, run_dir / PLOT_FILE)
    seeds = sorted({r.seed for r in rows})
    names = {r.loss_id: r.metrics.get("loss_name") for r in rows}
    lines = [f"Each loss trained at each beta with {len(seeds)} fresh training seed(s) "
             f"({', '.join(map(str, seeds))}; none is a seed discovery trained with), then "
             "scored on the task's held-out openings. Points are means over seeds; "
             "standard errors include the between-seed variance.", "",
             "**These points were recorded before the frontier kept each seed's scaling path, "
             "so they are analysed as recorded: per-beta means compared unpaired (a seed effect "
             "common to every loss stays in the errors), rewards at different KLs, the KL noise "
             "left out, and the dominance statements are not corrected for their number.**", "",
             f"![reward vs KL]({PLOT_FILE})", ""]
    lines += _trained_table(summary, names)
    lines += ["", f"Dominance rule: {LEGACY_RULE} (unpaired, uncorrected).", ""]
    lines += [f"- **{loss}**: {verdict}" for loss, verdict in dominance(summary).items()]
    return lines + [""]


def frontier_section(rows: list[Any], run_dir: Path) -> list[str]:
    """Markdown lines for the frontier's rows of a run."""
    lines = ["### Reward-vs-KL frontier (sentiment)", ""]
    paths = seed_paths(rows)
    if paths:
        lines += path_lines(rows, paths, run_dir)
    elif summarise(rows):
        lines += legacy_lines(rows, run_dir)
    else:
        lines += ["No frontier point has been measured yet.", ""]
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

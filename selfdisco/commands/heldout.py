"""`selfdisco heldout RUN`: evaluate a run's best losses on held-out protocols (fresh seeds,
prompts the search never scored), or confirm its winner against dpo."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from selfdisco.commands.eval import parse_options
from selfdisco.errors import UserError
from selfdisco.formatting import print_json
from selfdisco.heldout.frontier import DEFAULT_BETAS
from selfdisco.heldout.measure import HeldoutRequest, run_heldout
from selfdisco.heldout.session import PROMPT_CHOICES
from selfdisco.report import write_report
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.paths import resolve_run
from selfdisco.tui.printer import Printer

HELP = ("evaluate a run's top losses and references on held-out protocols (reward-vs-KL "
        "frontier, ..., a pre-registered confirmation of the winner) with fresh training seeds "
        "and prompts the search never scored; resumable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="the run directory, or its id under "
                                                   "checkpoints/")
    parser.add_argument("--protocols", default="frontier",
                        help="comma-separated protocols to run: frontier, pairwise, lmeval, "
                             "confirm (the winner against dpo tuned over its beta, one "
                             "pre-registered one-sided test; (2 + dpo betas) x seeds "
                             "trainings) (default: frontier)")
    parser.add_argument("--losses", help="comma-separated losses instead of the defaults: "
                                         "candidate ids of the run or catalog names")
    parser.add_argument("--top", type=int, default=1,
                        help="how many of the run's best discovered losses (default 1)")
    parser.add_argument("--references",
                        help="catalog losses evaluated beside them (default: dpo,lrml; "
                             "digits: cross_entropy)")
    parser.add_argument("--betas", help="comma-separated betas for the protocols that sweep "
                                        "beta (default: 0.025,0.05,0.1,0.25)")
    parser.add_argument("--seeds", type=int,
                        help="fresh training seeds per point (default 2; confirm: 4)")
    parser.add_argument("--prompts", choices=list(PROMPT_CHOICES), default="unused",
                        help="what the task scores frontier and confirm points on: unused "
                             "(default): prompts the search never scored, with a sampling seed "
                             "of their own (sentiment: the held-out openings after the search's "
                             "first eval_prompts; digits: the test split); search: the search's "
                             "own prompts and sampling seed (not held out; the output says so)")
    parser.add_argument("--prompt-count", type=int, metavar="N",
                        help="sentiment, --prompts unused: how many unused openings (default: "
                             "as many as the search scored on)")
    parser.add_argument("--server", metavar="URL",
                        help="a running vLLM server with the run's policy model and LoRA "
                             "(http://HOST:PORT/v1) instead of starting one")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a protocol option (repeatable), e.g. allow_self_judge=true or "
                             "judge=URL (pairwise), lm_eval_limit=8 (lmeval), "
                             "dpo_betas=0.05,0.1 or tuning_seeds=2 (confirm)")
    parser.add_argument("--lm-eval-tasks", metavar="TASKS",
                        help="lmeval: comma-separated lm-eval tasks (default: the shipped "
                             "offline selfdisco_sentiment_mc; standard tasks need the Hub)")
    parser.add_argument("--estimate", action="store_true",
                        help="print the points to measure and the time estimate, then stop")
    parser.add_argument("--json", action="store_true",
                        help="print the estimate and the recorded points as JSON (progress goes "
                             "to stderr)")


def split(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_betas(text: str | None) -> list[float]:
    if not text:
        return list(DEFAULT_BETAS)
    try:
        betas = [float(item) for item in split(text)]
    except ValueError:
        raise UserError(f"--betas {text!r}: give numbers separated by commas, e.g. "
                        "0.025,0.05,0.1,0.25") from None
    if not betas or any(not 0 < b < 100 for b in betas):
        raise UserError(f"--betas {text!r}: every beta must be above 0 (and below 100)")
    return sorted(set(betas))


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        raise UserError(f"--top must be 0 or more, not {args.top}")
    run_dir = resolve_run(args.run)
    request = HeldoutRequest(
        protocols=split(args.protocols), betas=parse_betas(args.betas), seeds=args.seeds,
        top=args.top, references=None if args.references is None else split(args.references),
        losses=split(args.losses), options=parse_options(args.option),
        server_url=args.server or "", prompts=args.prompts, prompt_count=args.prompt_count)
    if args.lm_eval_tasks:
        request.options["lm_eval_tasks"] = args.lm_eval_tasks
    if not request.protocols:
        raise UserError("--protocols is empty; name at least one, e.g. frontier")
    out = sys.stderr if args.json else sys.stdout
    estimate = run_heldout(run_dir, request, listeners=[Printer(out, run_dir=run_dir)],
                       estimate_only=args.estimate, log=lambda text: print(text, file=out))
    if not args.estimate:
        write_report(run_dir)
    if args.json:
        print_json(_result(run_dir, estimate, with_points=not args.estimate))
    elif args.estimate:
        print(estimate.text)
    else:
        print(f"done; see {run_dir / 'report.md'} (section \"Held-out evaluation\")")
    return 0


def _result(run_dir: Path, estimate: Any, with_points: bool) -> dict:
    """The --json answer: the estimate, and the archive's held-out rows after a run."""
    result = {"run": str(run_dir), "protocols": [asdict(p) for p in estimate.protocols],
              "estimate_s": estimate.estimate_s}
    if with_points:
        archive = Archive(run_dir)
        result["points"] = [asdict(row) for row in archive.heldout_rows()]
        archive.close()
        result["report"] = str(run_dir / "report.md")
    return result

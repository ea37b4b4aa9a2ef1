"""`selfdisco losses`: the loss catalog, loss curves, plots and screening of candidate files."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.formatting import print_json
from selfdisco.losses import catalog, load_loss
from selfdisco.losses.candidate import Candidate
from selfdisco.losses.curves import loss_curve, plot_shapes
from selfdisco.losses.load import read_loss_file
from selfdisco.losses.parse import ParseError, parse_candidate
from selfdisco.losses.sandbox import SandboxError
from selfdisco.losses.screening import ScreenResult, screen
from selfdisco.rundir.shape import GRID

HELP = "the loss library: list, show, eval and plot losses; check a candidate file"

# Let option values start with a minus sign, so `--rho -2,0,1` works like `--rho=-2,0,1`.
NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list the catalog with the paper's scores")
    listing.add_argument("--json", action="store_true", help="print the catalog as JSON")
    show = actions.add_parser("show", help="formula, source and code of one loss")
    show.add_argument("name", help="catalog name, .py file or JSON candidate file")
    show.add_argument("--json", action="store_true", help="print the loss as JSON")
    evaluate = actions.add_parser(
        "eval", help="per-example losses at given rho values, as JSON",
        description="Print per-example losses (and d loss / d rho) as JSON. rho is the "
                    "chosen-minus-rejected log-ratio, applied with zero reference log-probs.")
    evaluate.add_argument("name", help="catalog name, .py file or JSON candidate file")
    evaluate.add_argument("--beta", type=float, default=0.05, help="beta (default 0.05)")
    evaluate.add_argument("--rho", required=True, nargs="+", metavar="R1,R2,...",
                          help="rho values, comma-separated (e.g. --rho -2,0,1.5)")
    evaluate._negative_number_matcher = NEGATIVE_VALUE
    plot = actions.add_parser(
        "plot", help="plot loss and slope against rho to a PNG",
        description="Screen each loss in the sandbox, which records its shape on the rho grid, "
                    "and plot the shapes (no loss code runs in this process).")
    plot.add_argument("names", nargs="+", help="catalog names or files, one curve each")
    plot.add_argument("--beta", type=float, default=0.05, help="beta (default 0.05)")
    plot.add_argument("-o", "--output", required=True, help="output .png file")
    plot.add_argument("--range", default=None, metavar="MIN,MAX",
                      help=f"rho range to plot, within the grid {GRID[0]:g},{GRID[-1]:g} "
                           "(default: all of it)")
    plot._negative_number_matcher = NEGATIVE_VALUE
    check = actions.add_parser(
        "check", help="screen a candidate file; exit 0 if it passes, 1 with the reason if not")
    check.add_argument("file", help="a JSON candidate {thought, name, code} or a .py file")
    check.add_argument("--json", action="store_true", help="print the verdict as JSON")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "eval": _eval, "plot": _plot,
            "check": _check}[args.action](args)


def _list(args: argparse.Namespace) -> int:
    if args.json:
        print_json([_entry_dict(entry) for entry in catalog.CATALOG.values()])
        return 0
    print(f"{'name':15} {'MT-Bench':>8}  full name")
    for entry in catalog.CATALOG.values():
        score = f"{entry.paper_score:.4g}" if entry.paper_score is not None else "-"
        print(f"{entry.name:15} {score:>8}  {entry.full_name}")
    print("\nScores: MT-Bench in the DiscoPOP paper (beta 0.05). "
          "`selfdisco losses show NAME` for details.")
    return 0


def _show(args: argparse.Namespace) -> int:
    candidate = load_loss(args.name)
    entry = catalog.CATALOG.get(args.name)
    if args.json:
        print_json({**(_entry_dict(entry) if entry else {}), **candidate.to_dict()})
        return 0
    if entry:
        print(f"{entry.name}: {entry.full_name}")
        score = entry.paper_score if entry.paper_score is not None else "-"
        print(f"paper score (MT-Bench): {score}")
        print(f"source: {entry.source}")
        print("formula:")
        print("    " + entry.formula.replace("\n", "\n    "))
    else:
        print(f"{candidate.name} (from {args.name})")
        if candidate.thought:
            print(f"thought: {candidate.thought}")
    print("code:")
    print("    " + candidate.code.rstrip().replace("\n", "\n    "))
    return 0


def _eval(args: argparse.Namespace) -> int:
    rho = _numbers(args.rho, "--rho")
    _check_beta(args.beta)
    candidate = load_loss(args.name)
    losses, grads = loss_curve(candidate, rho, args.beta)
    print_json({"name": candidate.name, "beta": args.beta, "rho": rho, "loss": losses,
                "grad": grads})
    return 0


def _plot(args: argparse.Namespace) -> int:
    low, high = _plot_range(args.range)
    _check_beta(args.beta)
    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise UserError(f"-o must name a .png file; got '{output}'")
    if not output.parent.is_dir():
        raise UserError(f"the folder {output.parent} does not exist; create it first")
    candidates = [load_loss(name) for name in args.names]
    plot_shapes([(c.name, _screened_shape(c, args.beta).within(low, high)) for c in candidates],
                output)
    print(f"wrote {output}")
    return 0


def _plot_range(text: str | None) -> tuple[float, float]:
    if text is None:
        return GRID[0], GRID[-1]
    bounds = _numbers([text], "--range")
    if len(bounds) != 2 or bounds[0] >= bounds[1]:
        raise UserError(f"--range must be MIN,MAX with MIN < MAX, e.g. --range=-10,10; got "
                        f"'{text}'")
    if bounds[0] < GRID[0] or bounds[1] > GRID[-1]:
        raise UserError(f"--range must lie within the rho grid {GRID[0]:g},{GRID[-1]:g}, where "
                        f"shapes are recorded; got '{text}'")
    return bounds[0], bounds[1]


def _screened_shape(candidate, beta: float):
    """The loss's shape at `beta`, as the screening sandbox records it."""
    try:
        result = screen(candidate, beta=beta)
    except SandboxError as err:
        raise UserError(f"{err}; `selfdisco doctor` checks the installation") from None
    if not result.ok:
        raise UserError(f"cannot plot {candidate.name}: it does not pass screening: "
                        f"{result.reason}")
    return result.shape


def _entry_dict(entry) -> dict:
    """A catalog entry's description, without its code (the candidate holds that)."""
    return {"name": entry.name, "full_name": entry.full_name, "paper_score": entry.paper_score,
            "source": entry.source, "formula": entry.formula}


def _check(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds; got {args.timeout}")
    candidate, parse_error = _candidate_for_check(args.file)
    if candidate is None:
        result = ScreenResult(False, parse_error, None, 0.0)
    else:
        try:
            result = screen(candidate, timeout_s=args.timeout)
        except SandboxError as err:
            raise UserError(f"{err}; `selfdisco doctor` checks the installation") from None
    name = candidate.name if candidate else Path(args.file).stem
    if args.json:
        print_json({"name": name, **result.to_dict()})
    elif result.ok:
        print(f"ok: {name} passed screening in {result.seconds:.2f} s")
    else:
        print(f"rejected: {result.reason}")
    return 0 if result.ok else 1


def _candidate_for_check(spec: str):
    """(candidate, None), or (None, the parse error) when a JSON file holds no candidate."""
    path = Path(spec)
    if spec in catalog.CATALOG and not path.exists():
        return catalog.get(spec).candidate, None
    text = read_loss_file(path)
    if path.suffix == ".py":
        return Candidate(thought="", name=path.stem, code=text), None
    try:
        return parse_candidate(text), None
    except ParseError as err:
        return None, str(err)


def _check_beta(beta: float) -> None:
    if not (beta > 0 and math.isfinite(beta)):
        raise UserError(f"--beta must be a positive number, e.g. --beta 0.05; got {beta}")


def _numbers(values: list[str], option: str) -> list[float]:
    numbers = []
    for item in ",".join(values).split(","):
        if not item.strip():
            continue
        try:
            numbers.append(float(item))
        except ValueError:
            raise UserError(f"{option} takes comma-separated numbers, e.g. {option}=-2,0,1.5; "
                            f"'{item.strip()}' is not a number") from None
    if not numbers:
        raise UserError(f"{option} needs at least one number, e.g. {option}=-2,0,1.5")
    if any(n != n or n in (float("inf"), float("-inf")) for n in numbers):
        raise UserError(f"{option} values must be finite numbers")
    return numbers

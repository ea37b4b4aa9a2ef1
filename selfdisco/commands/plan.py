"""`selfdisco plan`: where a run's servers and training would go, and whether they fit."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfdisco.commands.config import assignments
from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.formatting import print_json
from selfdisco.launch.checks import check_run
from selfdisco.launch.plan import make_plan
from selfdisco.llm.backend import detect_backend
from selfdisco.llm.machine import described_gpus, detect_machine, parse_machine
from selfdisco.presets import DEFAULT_PRESET, PRESETS

HELP = "show where a run's model servers and training go and whether they fit in memory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS),
                        help=f"starting configuration (default: {DEFAULT_PRESET})")
    parser.add_argument("--config", type=Path, metavar="FILE", help="a TOML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set workers=4 (repeatable)")
    parser.add_argument("--machine", metavar="SPEC",
                        help="plan for a described machine instead of this one: GPUSxMEMORY "
                             "(8x80GB; GB read as GiB), or cpu, or cpu:64GB")
    parser.add_argument("--gpus", type=int, metavar="N", help="described machine: N GPUs ...")
    parser.add_argument("--gpu-memory-gib", type=float, metavar="G", help="... of G GiB each")
    parser.add_argument("--params", action="append", default=[], metavar="MODEL=BILLIONS",
                        help="a model's parameter count, for one whose size is not known here "
                             "(repeatable), e.g. --params org/model=7.6")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def machine_from(args: argparse.Namespace):
    """The described machine, or this one (its GPUs when vLLM is the CUDA build)."""
    described = args.gpus is not None or args.gpu_memory_gib is not None
    if args.machine and described:
        raise UserError("give either --machine or --gpus with --gpu-memory-gib, not both")
    if args.machine:
        return parse_machine(args.machine)
    if described:
        if args.gpus is None or args.gpu_memory_gib is None:
            raise UserError("--gpus and --gpu-memory-gib go together, e.g. --gpus 8 "
                            "--gpu-memory-gib 80")
        return described_gpus(args.gpus, args.gpu_memory_gib)
    return detect_machine(detect_backend())


def parse_params(values: list[str]) -> dict[str, float]:
    """MODEL=BILLIONS pairs as parameter counts."""
    params = {}
    for value in values:
        model, _, count = value.rpartition("=")
        try:
            billions = float(count)
        except ValueError:
            billions = 0.0
        if not model or billions <= 0:
            raise UserError(f"--params {value!r}: expected MODEL=BILLIONS, e.g. "
                            "Qwen/Qwen2.5-7B-Instruct=7.6")
        params[model] = billions * 1e9
    return params


def run(args: argparse.Namespace) -> int:
    config = load_config(args.preset, args.config, assignments(args.set))
    check_run(config)
    plan = make_plan(config, machine_from(args), parse_params(args.params))
    if args.json:
        print_json(plan.to_dict())
    else:
        print(plan.describe())
    if not plan.fits:
        raise UserError(plan.refusal())
    return 0

"""`selfdisco models`: list or prepare the bundled models."""

from __future__ import annotations

import argparse

from selfdisco.formatting import print_json
from selfdisco.llm.models import BUNDLED, prepare_all

HELP = "list the bundled models, or prepare them (download and convert once)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "prepare"], default="list")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    if args.action == "prepare":
        prepare_all()
        if not args.json:
            return 0
    if args.json:
        print_json([{"name": name, "ready": model.is_ready(), "path": model.path,
                     "parameters": (model.manifest() or {}).get("parameters"),
                     "description": model.description} for name, model in BUNDLED.items()])
        return 0
    for name, model in BUNDLED.items():
        manifest = model.manifest() or {}
        state = "ready" if model.is_ready() else "not prepared"
        params = manifest.get("parameters")
        size = f"{params / 1e6:.1f}M" if params else "-"
        print(f"{name:24} {state:13} {size:>8}  {model.description}")
    return 0

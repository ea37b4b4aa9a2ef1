"""The `selfdisco` command line.

Each command lives in selfdisco/commands/<name>.py with `HELP`, `add_arguments(parser)` and
`run(args) -> int`. Those modules import only light libraries at the top; heavy ones (torch,
transformers, trl, vllm, textual) are imported inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from selfdisco import __version__
from selfdisco.errors import UserError

# Command name -> module. Order is the order shown by --help.
COMMANDS = {
    "run": "selfdisco.commands.run",
    "resume": "selfdisco.commands.resume",
    "report": "selfdisco.commands.report",
    "export": "selfdisco.commands.export",
    "doctor": "selfdisco.commands.doctor",
    "models": "selfdisco.commands.models",
    "losses": "selfdisco.commands.losses",
    "plan": "selfdisco.commands.plan",
    "config": "selfdisco.commands.config",
    "serve": "selfdisco.commands.serve",
    "train": "selfdisco.commands.train",
    "eval": "selfdisco.commands.eval",
    "heldout": "selfdisco.commands.heldout",
    "tui": "selfdisco.commands.tui",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfdisco",
        description="Discover preference-optimization losses with open-weight LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"selfdisco {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - last line of defence for users
        if os.environ.get("SELFDISCO_DEBUG"):
            raise
        print(f"internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print("Set SELFDISCO_DEBUG=1 to see the traceback.", file=sys.stderr)
        return 1

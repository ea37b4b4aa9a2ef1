"""`selfdisco run`: discover losses. Opens the TUI on a terminal, prints progress otherwise."""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
from pathlib import Path

from selfdisco.config import _merge, load_config, parse_assignment, read_run_config
from selfdisco.launch.background import launch, run_locked
from selfdisco.launch.checks import check_run
from selfdisco.launch.plan import plan_run
from selfdisco.launch.start import prepare_run_dir
from selfdisco.presets import DEFAULT_PRESET, PRESETS
from selfdisco.rundir.paths import resolve_run
from selfdisco.tasks import task_names
from selfdisco.tui import run_app
from selfdisco.tui.printer import Printer

HELP = "run loss discovery (a new run directory under checkpoints/)"


class RenamedFlag(argparse.Action):
    """A flag whose first spelling is its name now; the later ones still work, with a notice."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.option_strings[0]:
            print(f"note: {option_string} is now {self.option_strings[0]}; the old name still "
                  "works", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=list(PRESETS),
                        help=f"starting configuration (default: {DEFAULT_PRESET})")
    parser.add_argument("--config", type=Path, metavar="FILE", help="a TOML config file")
    parser.add_argument("--proposer", metavar="SPEC",
                        help="local (default), http://HOST:PORT/v1, or replay:RUN (a recorded "
                             "run's directory or id)")
    parser.add_argument("--proposer-url-model", "--proposer-model", metavar="NAME",
                        dest="proposer_model", action=RenamedFlag,
                        help="with a proposer URL: the model to ask for (default: the "
                             "server's first)")
    parser.add_argument("--proposer-api-key-env", metavar="VAR",
                        help="with a proposer URL: the environment variable holding its API key")
    parser.add_argument("--proposer-structured", choices=["vllm", "openai", "none"],
                        help="with a proposer URL: vllm (default, structured_outputs), openai "
                             "(response_format JSON schema) or none")
    parser.add_argument("--generations", type=int, metavar="N")
    parser.add_argument("--candidates", type=int, metavar="K",
                        help="valid candidates per generation")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--task", choices=task_names(),
                        help="the task losses are discovered on (default: the preset's)")
    parser.add_argument("--run-dir", type=Path, metavar="DIR",
                        help="where to write the run (default: checkpoints/<time>-<preset>)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any config field, e.g. --set discovery.patience=3 (repeatable)")
    parser.add_argument("--no-tui", action="store_true",
                        help="print progress lines instead of opening the terminal UI")


def overrides_from(args: argparse.Namespace) -> dict:
    """A nested dict of only the settings the user typed."""
    out: dict = {}

    def put(path: list[str], value) -> None:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value

    for text in args.set:
        put(*parse_assignment(text))
    flags = {("server", "proposer_source"): args.proposer,
             ("discovery", "generations"): args.generations,
             ("server", "proposer_url_model"): args.proposer_model,
             ("server", "proposer_api_key_env"): args.proposer_api_key_env,
             ("server", "proposer_structured"): args.proposer_structured,
             ("discovery", "candidates_per_generation"): args.candidates, ("seed",): args.seed,
             ("task", "name"): args.task}
    for path, value in flags.items():
        if value is not None:
            put(list(path), value)
    return out


def resolve(args: argparse.Namespace):
    """The run's config; a replay starts from the recorded run's own config."""
    source = None
    if args.proposer and args.proposer.startswith("replay:"):  # a run directory or a run id
        source = resolve_run(args.proposer.removeprefix("replay:"))
        args.proposer = f"replay:{source}"
    overrides = overrides_from(args)
    if source is not None and not (args.config or args.preset):
        recorded = read_run_config(source).to_dict()
        return load_config(recorded["preset"], None, _merge(recorded, overrides))
    return load_config(args.preset, args.config, overrides)


def wants_tui(args: argparse.Namespace) -> bool:
    if args.no_tui or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return False

    return importlib.util.find_spec("textual") is not None


def follow(run_dir: Path, resume: bool) -> int:
    """Run in the background and watch it in the TUI; on close, stop it or leave it running."""
    proc = launch(run_dir, resume=resume)
    choice = run_app(run_dir, owns_run=True, process=proc)
    if choice == "stop" and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        print(f"stopped; continue it with: selfdisco resume {run_dir}")
    elif proc.poll() is None:
        print(f"the run goes on in the background (pid {proc.pid}); watch it with: "
              f"selfdisco tui {run_dir}")
    return 0


def run(args: argparse.Namespace) -> int:
    config = resolve(args)
    settings = check_run(config)  # a typo costs a second here, not a server start-up
    if settings is not None:  # None: a classification task, no policy to place
        plan_run(config)  # and so does a run that cannot fit in memory (see `selfdisco plan`)
    run_dir = prepare_run_dir(config, args.run_dir)
    if wants_tui(args):
        return follow(run_dir, resume=False)
    print(f"run directory: {run_dir}")
    run_locked(run_dir, resume=False, listeners=[Printer()])
    print(f"report: selfdisco report {run_dir}")
    return 0

"""`selfdisco eval`: a task's fitness for the base model, an adapter, or (digits) a loss."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.formatting import print_json
from selfdisco.llm.endpoint import open_llm
from selfdisco.llm.models import resolve_model
from selfdisco.presets import DEFAULT_PRESET, PRESETS
from selfdisco.rundir.paths import checkpoints_dir
from selfdisco.tasks import DEFAULT_TASK, EvaluationError, TaskContext, get_task, task_names

HELP = "measure a task's fitness for the base model, a LoRA adapter, or a classification loss"

# Metrics too long for the plain-text report (they are in --json).
HIDDEN_METRICS = ("judge_replies", "warnings", "examples")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=task_names(), default=DEFAULT_TASK,
                        help=f"the task (default: {DEFAULT_TASK})")
    parser.add_argument("--adapter", help="a LoRA adapter directory (PEFT format) to evaluate; "
                                          "without it the base model is evaluated")
    parser.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                        help=f"the task's sizes and the default model (default: {DEFAULT_PRESET})")
    parser.add_argument("--model", help="the base model: a bundled name, a directory or a Hub "
                                        "id (default: the preset's policy)")
    parser.add_argument("--server", metavar="URL",
                        help="use a running vLLM server (http://HOST:PORT/v1) instead of "
                             "starting one")
    parser.add_argument("--judge", metavar="URL",
                        help="mtbench: a running OpenAI-compatible server with the judge "
                             "model (default: the policy's server, refused unless --option "
                             "allow_self_judge=true)")
    parser.add_argument("--judge-model", help="mtbench: the judge's model name on its server")
    parser.add_argument("--judge-api-key-env", metavar="VAR",
                        help="mtbench: the environment variable holding the judge server's "
                             "API key")
    parser.add_argument("--judge-structured", choices=["vllm", "openai", "none"],
                        default="vllm", help="mtbench: how the judge's server constrains "
                        "verdicts: vllm (default, structured_outputs), openai (response_format "
                        "JSON schema) or none")
    parser.add_argument("--loss", help="digits: a .py file or JSON candidate defining "
                                       "fn(logits, targets) (default: cross-entropy)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a task option, e.g. eval_prompts=32 or mode=pairwise "
                             "(repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def parse_options(items: list[str]) -> dict[str, str]:
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option {item!r} must look like KEY=VALUE")
        options[key.strip()] = value
    return options


def read_loss_code(spec: str) -> str:
    """Candidate code from a .py file or a JSON candidate file ({"code": ...})."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"--loss {spec}: file not found (give a .py file or a JSON candidate)")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            code = json.loads(text)["code"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"--loss {spec}: expected a JSON object with a 'code' string") from None
        if not isinstance(code, str):
            raise UserError(f"--loss {spec}: 'code' must be a string")
        return code
    return text


def preset_model(preset: str) -> tuple[str, dict[str, Any]]:
    """The preset's policy model and its server settings."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = PRESETS[preset]
    return config["models"]["policy"], dict(config.get("server", {}))


def run(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    options = parse_options(args.option)
    if task.kind == "classification":
        if args.adapter:
            raise UserError(f"the {task.name} task scores classification losses, not "
                            "adapters; give --loss FILE instead of --adapter")
        ctx = TaskContext(seed=args.seed, preset=args.preset, options=options)
        loss = read_loss_code(args.loss) if args.loss else None
        try:
            fitness = task.score(ctx) if loss is None else task.evaluate_loss(ctx, loss)
        except EvaluationError as err:
            print(f"the loss failed: {err}", file=sys.stderr)
            return 1
        label = args.loss or "cross-entropy"
        return _report(args, fitness, {"task": task.name, "loss": label})
    if args.loss:
        raise UserError(f"--loss is for the digits task; the {task.name} task evaluates "
                        "adapters (--adapter DIR)")
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        raise UserError(f"--adapter {args.adapter}: not a LoRA adapter directory (no "
                        "adapter_config.json)")
    return _evaluate_with_server(args, task, options)


def _evaluate_with_server(args: argparse.Namespace, task: Any, options: dict[str, str]) -> int:
    model_name, server_config = preset_model(args.preset)
    model_path = resolve_model(args.model or model_name)
    server_options = {"check_numerics": True}
    if server_config.get("max_model_len"):
        server_options["max_model_len"] = int(server_config["max_model_len"])
    # The judge first: a wrong URL or key shows before a server start.
    judge = (open_llm(args.judge, option="--judge", model=args.judge_model,
                      client_options={"api_key_env": args.judge_api_key_env or "",
                                      "structured": args.judge_structured})
             if args.judge else None)
    if args.server:
        policy = open_llm(args.server, option="--server")
    else:
        print(f"starting vLLM for {model_path} (log: {checkpoints_dir() / 'serve'})",
              file=sys.stderr)
        policy = open_llm("local", model_path=model_path, server_options=server_options)
    try:
        if args.judge_model and not args.judge:
            options.setdefault("judge_model", args.judge_model)
        ctx = TaskContext(client=policy.client, model_path=model_path, seed=args.seed,
                          preset=args.preset, judge_client=judge.client if judge else None,
                          options=options)
        fitness = task.score(ctx, adapter_path=args.adapter)
    finally:
        if judge is not None:
            judge.close()
        policy.close()
    return _report(args, fitness, {"task": task.name, "model": model_path,
                                   "adapter": args.adapter or "none (base model)"})


def _report(args: argparse.Namespace, fitness: Any, header: dict[str, Any]) -> int:
    if args.json:
        print_json({**header, **fitness.to_dict()})
        return 0 if fitness.ok else 1
    for key, value in header.items():
        print(f"{key:12s} {value}")
    print(f"{'fitness':12s} {fitness.summary()}")
    for key, value in fitness.metrics.items():
        if key not in HIDDEN_METRICS:
            print(f"  {key:28s} {_format(value)}")
    for example in fitness.metrics.get("examples", []):
        print(f"  example: {' '.join(example.split())}")
    for warning in fitness.metrics.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    return 0 if fitness.ok else 1


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_format(v)}" for k, v in value.items()) or "-"
    return str(value)

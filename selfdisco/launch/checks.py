"""The checks of a run that need more than its config: names that registries own (executors,
tasks, dtypes, server sources), what the task, the executor and the training recipe accept, and
the judge. The config schema (selfdisco/config.py) checks only its own values."""

from __future__ import annotations

import json

from selfdisco.config import RunConfig
from selfdisco.errors import UserError
from selfdisco.execution.executors import executor_names, make_executor
from selfdisco.llm.backend import DTYPES
from selfdisco.llm.client import read_api_key
from selfdisco.llm.protocol import STRUCTURED_MODES
from selfdisco.llm.topology import parse_server_url, parse_source
from selfdisco.losses import catalog, confine
from selfdisco.tasks import get_task, run_train_settings, task_names
from selfdisco.tasks.digits import screening
from selfdisco.train.settings import TrainSettings


def check_names(config: RunConfig) -> None:
    """UserError for an executor, task, dtype, server URL, proposer source or structured-output
    mode that is not known."""
    for key, value, known in (("executor", config.executor, executor_names()),
                              ("task.name", config.task.name, task_names())):
        if value not in known:
            raise UserError(f"{key} {value!r} is not known; choose one of {', '.join(known)}")
    if config.server.dtype not in DTYPES:
        raise UserError(f"server.dtype must be one of {', '.join(DTYPES)}, not "
                        f"{config.server.dtype!r}")
    if config.server.url:
        parse_server_url(config.server.url)
    parse_source(config.server.proposer_source)
    if config.server.proposer_structured not in STRUCTURED_MODES:
        raise UserError(f"server.proposer_structured must be one of "
                        f"{', '.join(STRUCTURED_MODES)}, not {config.server.proposer_structured!r}")


def judge_note(config: RunConfig) -> str:
    """For a judged task: a UserError when the judge is the policy's own base model and the
    task's allow_self_judge option is off; with it on, the note the run records (run_started's
    notes, shown first by the TUI and the report). Empty otherwise."""
    task = get_task(config.task.name)
    if not task.needs_judge:
        return ""
    return task.check_judge(config.preset, config.task.options, config.models.policy,
                            config.judge_model) or ""


def check_run(config: RunConfig) -> TrainSettings | None:
    """Check what the task, the executor and the training recipe own, before anything is
    written or started: a preference task, its options, its judge (judge_note), the executor's
    options, the burn-in losses, the training overrides, a LoRA rank the server can load, and
    the proposer's API key variable (when one is named), and that candidate code can be
    confined where the config's `confine` requires it.

    Returns:
        The run's training settings.

    Raises:
        UserError: saying which setting is wrong and how to change it.
    """
    check_names(config)
    confine.require(config.confine)
    name = config.task.name
    task = get_task(name)
    if task.kind == "classification":
        check_classification_run(config)
        return None
    if task.kind != "preference":
        usable = [n for n in task_names() if get_task(n).kind == "preference"]
        raise UserError(f"the {name} task scores {task.kind} losses; discovery runs on "
                        f"preference tasks ({', '.join(usable)}): set task.name to one of them")
    make_executor(config.executor, config.workers, config.executor_options)
    try:
        task.check_options(config.preset, config.task.options)
    except UserError as err:
        raise UserError(f"task.options of the {name} task: {err}; change it in the config file "
                        "or with --set task.options.KEY=VALUE") from None
    judge_note(config)
    source = parse_source(config.server.proposer_source)
    if source.kind == "http" and config.server.proposer_api_key_env:
        read_api_key(config.server.proposer_api_key_env, source.url)
    for loss in config.discovery.burn_in:
        if loss not in catalog.CATALOG:
            raise UserError(f"discovery.burn_in names {loss!r}, which is not in the loss catalog;"
                            f" choose from {', '.join(catalog.CATALOG)}")
    settings = run_train_settings(config)
    rank, most = settings.lora_r, config.server.max_lora_rank
    if rank > most:
        where = ("train.overrides.lora_r" if "lora_r" in config.train.overrides
                 else f"the {config.train.recipe} training recipe")
        raise UserError(f"LoRA rank {rank} (from {where}) is above the server's largest LoRA "
                        f"rank, server.max_lora_rank = {most}: lower it with --set "
                        f"train.overrides.lora_r={most}, or raise server.max_lora_rank to {rank}")
    return settings


def check_classification_run(config: RunConfig) -> None:
    """UserError, saying what to change, for a setting a classification run cannot use."""
    d = config.discovery
    try:
        get_task(config.task.name).check_options(config.preset, config.task.options)
    except UserError as err:
        raise UserError(f"task.options of the {config.task.name} task: {err}; change it in the "
                        "config file or with --set task.options.KEY=VALUE") from None
    fixes = []
    if any(name not in screening.CATALOG for name in d.burn_in):
        fixes.append(("discovery.burn_in names losses that are not classification baselines "
                      f"(choose from {', '.join(screening.CATALOG)})",
                      "discovery.burn_in=" + json.dumps(list(screening.CATALOG))))
    if d.code_grammar != "free":
        fixes.append(("the primitives code grammar writes preference losses",
                      "discovery.code_grammar=free"))
    if d.self_improve not in (False, "off"):
        fixes.append(("no policy adapter is trained that could propose",
                      "discovery.self_improve=off"))
    if fixes:
        flags = " ".join(f"--set '{flag}'" for _, flag in fixes)
        raise UserError(f"the {config.task.name} task discovers classification losses: "
                        f"{'; '.join(why for why, _ in fixes)}. Run with {flags} (or set them "
                        "in the config file)")

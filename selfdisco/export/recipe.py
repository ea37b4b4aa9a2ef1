"""Export a discovered loss: a standalone loss.py, a TRL trainer, and the exact recipe.

`build_recipe(run_dir, id)` gathers what produced a candidate's fitness: the job it was trained
with (candidates/<id>/job.json, or for a baseline the run kept no job for, the same job rebuilt
from the run's config), its training seeds, the preference pairs (from the task's cache) and the
recorded result. `write_export` writes it out; `read_export` reads an export directory back, so
`selfdisco train --from` can train and score it again (selfdisco/export/reproduce.py).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.execution.records import Job, Result
from selfdisco.train.settings import TrainSettings

EXPORT_DIR = "export"
RECIPE_FILE = "recipe.toml"
LOSS_FILE = "loss.py"
TRAINER_FILE = "trainer.py"
PAIRS_FILE = "pairs.jsonl"
RECORDED_FILE = "recorded.json"
ENTRY = "per_pair_loss"  # the function loss.py offers in the project's (and TRL's) argument order

# Catalog losses that TRL 1.16 computes exactly as selfdisco trains them, and their loss_type
# (tests/test_train_trainer.py checks dpo and lrml against TRL; hinge is TRL's relu(1 - beta rho)).
# ipo is left out: TRL's divides log-probs by the completion length.
TRL_LOSS_TYPES = {"dpo": "sigmoid", "hinge": "hinge", "lrml": "discopop"}


@dataclass
class Recipe:
    """Everything that produced one candidate's recorded fitness."""

    run: str  # the run directory
    id: str
    name: str
    code: str
    task: str
    task_preset: str
    task_options: dict
    task_seed: int
    policy: str  # the config's models.policy
    model_path: str  # as the worker loaded it
    dtype: str
    train: TrainSettings
    train_seeds: list[int]  # one per replicate, in replicate order
    source: str  # "job.json", or "config" when the run kept no job for this candidate
    fitness: float | None = None
    stderr: float | None = None
    n: int | None = None
    pooled_seed_variance: float | None = None  # the run's, for the combined standard error
    pairs_version: int = 0
    pairs_digest: str = ""  # empty: the pairs were not in the task's cache at export time
    pairs_count: int = 0
    trl_loss_type: str = ""  # a built-in TRL loss that trains the same, if any
    recorded: dict = field(default_factory=dict)  # the row's result (records.Result.to_dict)
    pairs: list | None = None  # not in recipe.toml: pairs.jsonl

    def job(self, *, server_url: str, served_model: str, out_dir: Path, cache_dir: Path,
            ref_cache_dir: Path | None, replicate: int = 0) -> Job:
        """The worker's job for one training seed of this recipe."""
        return Job(task=self.task, task_options=dict(self.task_options),
                   task_preset=self.task_preset, task_seed=self.task_seed,
                   train_seed=self.train_seeds[replicate], model_path=self.model_path,
                   cache_dir=str(cache_dir), ref_cache_dir=str(ref_cache_dir or ""),
                   train_settings=self.train, server_url=server_url, served_model=served_model,
                   dtype=self.dtype, id=self.id, name=self.name, code=self.code,
                   out_dir=str(out_dir), replicate=replicate)

    def to_toml(self) -> str:
        import tomli_w

        from selfdisco.formatting import format_fitness

        tables = {
            "loss": {"id": self.id, "name": self.name, "file": LOSS_FILE, "code": self.code,
                     "trl_loss_type": self.trl_loss_type},
            "fitness": {"value": self.fitness, "stderr": self.stderr, "n": self.n,
                        "shown": format_fitness(self.fitness, self.stderr, missing="none"),
                        "pooled_seed_variance": self.pooled_seed_variance},
            "model": {"policy": self.policy, "path": self.model_path, "dtype": self.dtype},
            "data": {"source": f"the {self.task} task's preference pairs (task seed "
                               f"{self.task_seed}, pairs version {self.pairs_version})",
                     "file": PAIRS_FILE if self.pairs is not None else "",
                     "digest": self.pairs_digest, "pairs": self.pairs_count,
                     "version": self.pairs_version},
            "task": {"name": self.task, "preset": self.task_preset, "seed": self.task_seed,
                     "options": self.task_options},
            "train": {k: v for k, v in self.train.recipe().items() if k != "seed"},
            "seeds": {"train": self.train_seeds},  # one per replicate
            "origin": {"run": self.run, "source": self.source},
        }
        header = (f"# The recipe that produced the fitness of {self.name} ({self.id}) in "
                  f"{self.run}.\n# Train it again: selfdisco train --from DIR (this directory)"
                  ".\n")
        return header + tomli_w.dumps(_without_none(tables), multiline_strings=True)

    @classmethod
    def from_toml(cls, text: str) -> Recipe:
        data = tomllib.loads(text)
        try:
            loss, fit, model, data_, task = (data[k] for k in ("loss", "fitness", "model",
                                                                "data", "task"))
            return cls(run=data["origin"]["run"], id=loss["id"], name=loss["name"],
                       code=loss["code"], task=task["name"], task_preset=task["preset"],
                       task_options=dict(task.get("options", {})), task_seed=task["seed"],
                       policy=model["policy"], model_path=model["path"], dtype=model["dtype"],
                       train=TrainSettings().with_overrides(**{
                           "max_prompt_length": None,  # TOML has no null: absent is None
                           **data["train"], "seed": data["seeds"]["train"][0]}),
                       train_seeds=list(data["seeds"]["train"]),
                       source=data["origin"]["source"], fitness=fit.get("value"),
                       stderr=fit.get("stderr"), n=fit.get("n"),
                       pooled_seed_variance=fit.get("pooled_seed_variance"),
                       pairs_digest=data_.get("digest", ""), pairs_count=data_.get("pairs", 0),
                       pairs_version=data_.get("version", 0),
                       trl_loss_type=loss.get("trl_loss_type", ""))
        except (KeyError, TypeError) as err:
            raise UserError(f"{RECIPE_FILE} lacks {err}: write it again with `selfdisco "
                            "export`") from None


def _without_none(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    return data


# ---- building a recipe from a run ---------------------------------------------------------

def pick_row(run_dir: Path, id: str | None):
    """The archive row to export: `id`, or the best scored row with code (burn-in included)."""
    from selfdisco.rundir.archive import ARCHIVE_FILE, Archive

    if not (run_dir / ARCHIVE_FILE).is_file():
        raise UserError(f"{run_dir} has no {ARCHIVE_FILE}: is it a selfdisco run directory?")
    archive = Archive(run_dir)
    try:
        rows = archive.rows()
    finally:
        archive.close()
    if id is None:
        scored = [r for r in rows if r.status == "scored" and r.code and r.fitness is not None]
        if not scored:
            raise UserError(f"{run_dir} has no scored loss yet; export one by id once a "
                            "candidate is scored")
        return max(scored, key=lambda r: r.fitness)
    row = next((r for r in rows if r.id == id), None)
    if row is None:
        near = ", ".join(r.id for r in rows if r.code and r.evaluated)
        raise UserError(f"{run_dir} has no candidate {id!r}; evaluated losses: {near or 'none'}")
    if not row.code:
        raise UserError(f"{id} has no loss code (the untrained base policy): pick a loss")
    if row.status != "scored":
        raise UserError(f"{id} was not scored ({row.status}: {row.reason}); export a scored "
                        "loss, whose fitness the recipe reproduces")
    return row


def _jobs(run_dir: Path, id: str) -> list[Job]:
    """The jobs the run wrote for a candidate, in replicate order (none for a cached one)."""
    from selfdisco.execution.executors import JOB_FILE

    base = run_dir / "candidates" / id
    paths = [base / JOB_FILE] if (base / JOB_FILE).is_file() else sorted(
        base.glob(f"r*/{JOB_FILE}"), key=lambda p: int(p.parent.name[1:]))
    jobs = []
    for path in paths:
        try:
            jobs.append(Job.from_dict(json.loads(path.read_text())))
        except ValueError as err:
            raise UserError(f"{path} does not read as a job: {err}") from None
    return jobs


def _template(config) -> Job:
    """The job a run's candidates share, rebuilt from its config as the run built it."""
    from selfdisco.config import run_train_settings
    from selfdisco.llm.models import resolve_model
    from selfdisco.llm.server import detect_backend, resolve_dtype
    from selfdisco.rundir.paths import checkpoints_dir
    from selfdisco.seeds import derive

    settings = run_train_settings(config)
    cache = checkpoints_dir() / "cache"
    return Job(task=config.task.name, task_options=dict(config.task.options),
               task_preset=config.preset, task_seed=derive(config.seed, "task"),
               train_seed=derive(config.seed, "train"),
               model_path=resolve_model(config.models.policy), cache_dir=str(cache),
               ref_cache_dir=str(cache / "refcache"), train_settings=settings, server_url="",
               served_model="",
               dtype=resolve_dtype(config.server.dtype, detect_backend(), settings.bf16))


def build_recipe(run_dir: Path, id: str | None = None, *, with_pairs: bool = True,
                 match_trl: bool = True) -> Recipe:
    """The recipe of candidate `id` (default: the best scored loss) of a run.

    Args:
        run_dir: the run directory.
        id: an archive id such as g02-c1 or burn-dpo; None picks the best scored loss.
        with_pairs: read the preference pairs from the task's cache (for their digest and
            pairs.jsonl); without them `train --from` makes them again from the task seed.
        match_trl: look for a built-in TRL loss that trains the same (screens in the sandbox).
    """
    from selfdisco import stats
    from selfdisco.config import read_run_config
    from selfdisco.discovery.evaluation import replicate_seed
    from selfdisco.rundir.archive import Archive

    run_dir = Path(run_dir)
    row = pick_row(run_dir, id)
    config = read_run_config(run_dir)
    jobs = _jobs(run_dir, row.id)
    job = jobs[0] if jobs else _template(config)
    replicates = max(len(jobs), config.discovery.replicates)
    seeds = [j.train_seed for j in jobs] or [
        replicate_seed(job.train_seed, k) for k in range(replicates)]
    archive = Archive(run_dir)
    try:
        pooled = stats.run_seed_variance(archive.rows())
    finally:
        archive.close()
    recorded = Result.from_row(row)
    recipe = Recipe(run=str(run_dir), id=row.id, name=row.name or row.id, code=row.code,
                    task=job.task, task_preset=job.task_preset,
                    task_options=dict(job.task_options), task_seed=job.task_seed,
                    policy=config.models.policy, model_path=job.model_path, dtype=job.dtype,
                    train=job.train_settings.with_overrides(report_to=[], seed=seeds[0]),
                    train_seeds=seeds,
                    source="job.json" if jobs else "config", fitness=row.fitness,
                    stderr=row.stderr, n=(row.metrics or {}).get("n"),
                    pooled_seed_variance=pooled if len(seeds) > 1 else None,
                    recorded=recorded.to_dict())
    if with_pairs:
        _add_pairs(recipe, Path(job.cache_dir))
    if match_trl:
        from selfdisco.export.template import trl_equivalent

        recipe.trl_loss_type = trl_equivalent(row.code, config.discovery.duplicate_tolerance,
                                              row.fingerprint)
    return recipe


def _add_pairs(recipe: Recipe, cache_dir: Path) -> None:
    """The task's cached preference pairs, with their digest (as the run's burn-in key has)."""
    from selfdisco.launch.start import pairs_digest
    from selfdisco.tasks import TaskContext, get_task

    task = get_task(recipe.task)
    recipe.pairs_version = task.pairs_version
    ctx = TaskContext(client=None, model_path=recipe.model_path, cache_dir=cache_dir,
                      seed=recipe.task_seed, preset=recipe.task_preset,
                      options=dict(recipe.task_options), dtype=recipe.dtype)
    try:
        pairs = task.preference_data(ctx)
    except ValueError:  # not cached, and making them needs the policy's server
        return
    rows = pairs.to_list() if hasattr(pairs, "to_list") else list(pairs)
    recipe.pairs, recipe.pairs_digest, recipe.pairs_count = rows, pairs_digest(rows), len(rows)


# ---- writing and reading an export --------------------------------------------------------

def write_export(recipe: Recipe, out_dir: Path) -> list[Path]:
    """Write loss.py, trainer.py, recipe.toml, recorded.json (and pairs.jsonl when the pairs
    were read) into out_dir; returns the paths written."""
    from selfdisco.export.template import loss_module, trainer_module

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {LOSS_FILE: loss_module(recipe), TRAINER_FILE: trainer_module(recipe),
             RECIPE_FILE: recipe.to_toml(),
             RECORDED_FILE: json.dumps(recipe.recorded, indent=2, default=str) + "\n"}
    if recipe.pairs is not None:
        files[PAIRS_FILE] = "".join(json.dumps(p) + "\n" for p in recipe.pairs)
    for name, text in files.items():
        (out_dir / name).write_text(text)
    return [out_dir / name for name in files]


def is_export(path: Path) -> bool:
    return (Path(path) / RECIPE_FILE).is_file()


def read_export(path: Path) -> Recipe:
    """An export directory's recipe, with its pairs and recorded result when present."""
    path = Path(path)
    if not is_export(path):
        raise UserError(f"{path} has no {RECIPE_FILE}: give a directory written by `selfdisco "
                        "export`, or RUN:ID")
    recipe = Recipe.from_toml((path / RECIPE_FILE).read_text())
    if recipe.model_path.startswith("/") and not Path(recipe.model_path).exists():
        from selfdisco.llm.models import resolve_model

        recipe.model_path = resolve_model(recipe.policy)  # exported on another machine
    if (path / PAIRS_FILE).is_file():
        from selfdisco.launch.start import pairs_digest

        rows = [json.loads(line) for line in (path / PAIRS_FILE).read_text().splitlines()
                if line.strip()]
        if recipe.pairs_digest and pairs_digest(rows) != recipe.pairs_digest:
            raise UserError(f"{path / PAIRS_FILE} does not match the digest in {RECIPE_FILE} "
                            f"({recipe.pairs_digest}): it was changed after the export")
        recipe.pairs, recipe.pairs_count = rows, len(rows)
    if (path / RECORDED_FILE).is_file():
        recipe.recorded = json.loads((path / RECORDED_FILE).read_text())
    return recipe


def resolve_source(text: str) -> Recipe:
    """A recipe from an export directory or from RUN:ID (RUN a run directory or a run id)."""
    from selfdisco.rundir.paths import resolve_run

    if is_export(Path(text).expanduser()):
        return read_export(Path(text).expanduser())
    run, sep, id = text.rpartition(":")
    if not sep or not run or not id:
        raise UserError(f"--from {text!r}: give RUN:ID (a run directory or run id, and a "
                        "candidate id such as g01-c1), or an export directory")
    return build_recipe(resolve_run(run), id, match_trl=False)

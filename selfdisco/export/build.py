"""Export a discovered loss from a run: a standalone loss.py, a TRL trainer, and the exact recipe.

`build_recipe(run_dir, id)` gathers what produced a candidate's fitness: the job it was trained
with (candidates/<id>/job.json, or for a baseline the run kept no job for, the same job rebuilt
from the run's config), its training seeds, the preference pairs (from the task's cache) and the
recorded result. `write_export` writes it out (the files' text: template.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from selfdisco import stats
from selfdisco.config import read_run_config
from selfdisco.errors import UserError
from selfdisco.execution.executors import JOB_FILE
from selfdisco.execution.records import Job, Result
from selfdisco.export.recipe import (
    LOSS_FILE,
    PAIRS_FILE,
    RECIPE_FILE,
    RECORDED_FILE,
    TRAINER_FILE,
    Recipe,
    is_export,
    read_export,
)
from selfdisco.export.template import loss_module, trainer_module, trl_equivalent
from selfdisco.launch.start import pairs_digest
from selfdisco.llm.backend import detect_backend, resolve_dtype
from selfdisco.llm.models import resolve_model
from selfdisco.rundir.archive import ARCHIVE_FILE, Archive
from selfdisco.rundir.events import SCORED
from selfdisco.rundir.paths import checkpoints_dir, resolve_run
from selfdisco.seeds import derive, replicate_seed
from selfdisco.tasks import TaskContext, get_task, recorded_options, run_train_settings


def pick_row(run_dir: Path, id: str | None):
    """The archive row to export: `id`, or the best scored row with code (burn-in included)."""
    if not (run_dir / ARCHIVE_FILE).is_file():
        raise UserError(f"{run_dir} has no {ARCHIVE_FILE}: is it a selfdisco run directory?")
    archive = Archive(run_dir)
    try:
        rows = archive.rows()
    finally:
        archive.close()
    if id is None:
        scored = [r for r in rows if r.status == SCORED and r.code and r.fitness is not None]
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
    if row.status != SCORED:
        raise UserError(f"{id} was not scored ({row.status}: {row.reason}); export a scored "
                        "loss, whose fitness the recipe reproduces")
    return row


def _jobs(run_dir: Path, id: str) -> list[Job]:
    """The jobs the run wrote for a candidate, in replicate order (none for a cached one)."""
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
    # what the row's own scoring fixed, so that a reproduction scores as the run did
    options = recorded_options(job.task, job.task_options, [row.metrics or {}])
    recipe = Recipe(run=str(run_dir), id=row.id, name=row.name or row.id, code=row.code,
                    task=job.task, task_preset=job.task_preset,
                    task_options=options, task_seed=job.task_seed,
                    policy=config.models.policy, model_path=job.model_path, dtype=job.dtype,
                    train=job.train_settings.with_overrides(report_to=[], seed=seeds[0]),
                    train_seeds=seeds,
                    source="job.json" if jobs else "config", fitness=row.fitness,
                    stderr=row.stderr, n=(row.metrics or {}).get("n"),
                    pooled_seed_variance=pooled if len(seeds) > 1 else None,
                    recorded=recorded.to_dict())
    if with_pairs:
        _add_pairs(recipe, Path(job.cache_dir))
    if match_trl:  # on the whole grid: the export is trained with other recipes, beyond the
        # rho this run's training reached (the run's reach judges its own duplicates only)
        recipe.trl_loss_type = trl_equivalent(row.code, config.discovery.duplicate_tolerance,
                                              row.fingerprint)
    return recipe


def _add_pairs(recipe: Recipe, cache_dir: Path) -> None:
    """The task's cached preference pairs, with their digest (as the run's burn-in key has)."""
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


def resolve_source(text: str) -> Recipe:
    """A recipe from an export directory or from RUN:ID (RUN a run directory or a run id)."""
    if is_export(Path(text).expanduser()):
        return read_export(Path(text).expanduser())
    run, sep, id = text.rpartition(":")
    if not sep or not run or not id:
        raise UserError(f"--from {text!r}: give RUN:ID (a run directory or run id, and a "
                        "candidate id such as g01-c1), or an export directory")
    return build_recipe(resolve_run(run), id, match_trl=False)

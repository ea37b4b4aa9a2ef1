"""An exported loss's recipe: what produced its fitness (the training job, seeds, pairs digest
and recorded result), the files of an export directory, and `read_export`, which reads one back
so that `selfdisco train --from` can train and score it again (selfdisco/export/reproduce.py).
An export is made from a run by selfdisco/export/build.py.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from selfdisco.errors import UserError
from selfdisco.execution.records import Job
from selfdisco.formatting import format_fitness
from selfdisco.launch.start import pairs_digest
from selfdisco.llm.models import resolve_model
from selfdisco.train.settings import TrainSettings

EXPORT_DIR = "export"
RECIPE_FILE = "recipe.toml"
LOSS_FILE = "loss.py"
TRAINER_FILE = "trainer.py"
PAIRS_FILE = "pairs.jsonl"
RECORDED_FILE = "recorded.json"
ENTRY = "per_pair_loss"  # the function loss.py offers in the project's (and TRL's) argument order

# Catalog losses that TRL 1.16 computes exactly as selfdisco trains them, and their loss_type
# (tests/train/test_trainer.py checks dpo and lrml against TRL; hinge is TRL's relu(1 - beta rho)).
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
        recipe.model_path = resolve_model(recipe.policy)  # exported on another machine
    if (path / PAIRS_FILE).is_file():
        rows = [json.loads(line) for line in (path / PAIRS_FILE).read_text().splitlines()
                if line.strip()]
        if recipe.pairs_digest and pairs_digest(rows) != recipe.pairs_digest:
            raise UserError(f"{path / PAIRS_FILE} does not match the digest in {RECIPE_FILE} "
                            f"({recipe.pairs_digest}): it was changed after the export")
        recipe.pairs, recipe.pairs_count = rows, len(rows)
    if (path / RECORDED_FILE).is_file():
        recipe.recorded = json.loads((path / RECORDED_FILE).read_text())
    return recipe

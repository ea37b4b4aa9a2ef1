"""selfdisco export: loss.py, trainer.py and recipe.toml from a recorded run, and reading an
export back for `train --from`."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from loop_helpers import CurveEvaluator, ScriptedProposer, answer, make_loop
from train_helpers import assert_same, loss_and_grads, make_trainer, trainer_arguments

from selfdisco.config import read_run_config
from selfdisco.errors import UserError
from selfdisco.export.build import build_recipe, resolve_source, write_export
from selfdisco.export.recipe import LOSS_FILE, PAIRS_FILE, RECIPE_FILE, TRAINER_FILE, read_export
from selfdisco.formatting import format_fitness
from selfdisco.losses import compile_loss
from selfdisco.seeds import derive
from selfdisco.tasks import run_train_settings


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished one-generation run (scripted proposer, curve fitness): hinge_exp is the best."""
    run = tmp_path_factory.mktemp("export") / "run"
    answers = [answer("steeper", "1.0 * F.softplus(-3.0 * x)"),
               answer("hinge_exp", "0.7 * torch.relu(1 - 2.0 * x) + 0.3 * torch.exp(-1.0 * x)")]
    make_loop(run, ScriptedProposer(answers), CurveEvaluator(), generations=1).run()
    return run


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_best_loss_is_picked_and_its_recipe_is_the_runs(run_dir):
    recipe = build_recipe(run_dir, match_trl=False)
    assert recipe.name == "hinge_exp" and recipe.source == "config"
    config = read_run_config(run_dir)
    trained = run_train_settings(config).with_overrides(seed=derive(config.seed, "train"))
    assert recipe.train.recipe() == trained.recipe()
    assert recipe.train.learning_rate == 1e-3  # the task's smoke recipe, not the preset default
    assert recipe.train_seeds == [derive(config.seed, "train")]
    assert recipe.task_seed == derive(config.seed, "task")
    # the curve evaluator's rows record no fitness_version: scored as by an earlier version
    assert (recipe.task, recipe.task_preset, recipe.task_options) == (
        "sentiment", "smoke", {**config.task.options, "fitness_version": 1})


def test_exported_loss_is_the_candidates_code_as_a_standalone_function(run_dir, tmp_path):
    recipe = build_recipe(run_dir, match_trl=False)
    paths = write_export(recipe, tmp_path)
    assert {p.name for p in paths} >= {LOSS_FILE, TRAINER_FILE, RECIPE_FILE}
    text = (tmp_path / LOSS_FILE).read_text()
    assert recipe.code.rstrip() in text and recipe.run in text
    assert f"Fitness {format_fitness(recipe.fitness, recipe.stderr)} on the" in " ".join(
        text.split())
    loss = load_module(tmp_path / LOSS_FILE, "exported_loss")
    args = [torch.randn(6) for _ in range(4)]
    torch.testing.assert_close(loss.per_pair_loss(*args, 0.1),
                               compile_loss(recipe.code)(*args, 0.1))
    ast.parse((tmp_path / TRAINER_FILE).read_text())
    back = read_export(tmp_path)
    assert (back.code, back.train, back.train_seeds, back.fitness, back.task_options) == (
        recipe.code, recipe.train, recipe.train_seeds, recipe.fitness, recipe.task_options)
    assert back.recorded["fitness"] == recipe.fitness
    assert back.pairs_version == recipe.pairs_version > 0
    recipe.train = recipe.train.with_overrides(max_prompt_length=None)  # keeps whole prompts
    write_export(recipe, tmp_path)
    assert read_export(tmp_path).train.max_prompt_length is None
    toml = (tmp_path / RECIPE_FILE).read_text()  # as if exported on another machine
    (tmp_path / RECIPE_FILE).write_text(toml.replace(recipe.model_path, "/elsewhere/smoke"))
    assert read_export(tmp_path).model_path == recipe.model_path  # smoke-llama, found here


def test_the_job_the_run_wrote_is_the_recipe(run_dir, tmp_path):
    """A candidate trained by a worker has candidates/<id>/job.json: its settings and seed win."""
    from selfdisco.export.build import _template

    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(run_dir), str(run)], check=True)
    template = _template(read_run_config(run))
    settings = template.train_settings.with_overrides(learning_rate=0.02, max_steps=7)
    job = template.for_candidate("g01-c1", "steeper", "code", str(run / "candidates" / "g01-c1"),
                                 train_seed=123)
    job = type(job)(**{**job.__dict__, "train_settings": settings,
                       "cache_dir": str(tmp_path / "empty-cache")})
    (run / "candidates" / "g01-c1").mkdir(parents=True)
    (run / "candidates" / "g01-c1" / "job.json").write_text(json.dumps(job.to_dict()))
    recipe = build_recipe(run, "g01-c1", match_trl=False)
    assert recipe.source == "job.json" and recipe.train_seeds == [123]
    assert (recipe.train.learning_rate, recipe.train.max_steps) == (0.02, 7)
    assert recipe.name == "steeper"  # the archive's, with its code
    assert recipe.pairs is None and recipe.pairs_digest == ""  # no pairs in that cache


def test_a_dpo_loss_names_trls_loss_type_and_its_trainer_is_trls(run_dir, tmp_path):
    """burn-dpo trains like TRL's sigmoid: the export says so, and the exported trainer gives
    TRL's own loss and gradients on the same batch."""
    recipe = build_recipe(run_dir, "burn-dpo")
    assert recipe.trl_loss_type == "sigmoid"
    write_export(recipe, tmp_path)
    assert 'TRL_LOSS_TYPE = "sigmoid"' in (tmp_path / TRAINER_FILE).read_text()
    assert 'loss_type="sigmoid"' in (tmp_path / LOSS_FILE).read_text()
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("loss", None)
        trainer_module = load_module(tmp_path / TRAINER_FILE, "exported_trainer")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("loss", None)
    from transformers import AutoModelForCausalLM

    from selfdisco.llm.models import resolve_model

    model_path = resolve_model("smoke-llama")
    exported = trainer_module.ExportedLossDPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
        max_prompt_length=None, **trainer_arguments(model_path, tmp_path))
    trl_sigmoid = make_trainer(model_path, tmp_path)  # TRL's DPOTrainer, loss_type sigmoid
    assert_same(loss_and_grads(exported), loss_and_grads(trl_sigmoid))
    assert recipe.train.beta == trainer_module.DPO_ARGS["beta"]


def test_a_loss_unlike_any_trl_loss_says_so(run_dir):
    assert build_recipe(run_dir, "g01-c2").trl_loss_type == ""


@pytest.mark.parametrize(("id", "message"), [
    ("g09-c9", "has no candidate 'g09-c9'; evaluated losses: burn-dpo"),
    ("base", "no loss code"),
])
def test_bad_ids_are_clear_errors(run_dir, id, message):
    with pytest.raises(UserError, match=message):
        build_recipe(run_dir, id, match_trl=False)


def test_changed_pairs_and_bad_sources_are_clear_errors(run_dir, tmp_path):
    recipe = build_recipe(run_dir, match_trl=False)
    recipe.pairs = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    recipe.pairs_digest = "0" * 16
    write_export(recipe, tmp_path)
    with pytest.raises(UserError, match=f"{PAIRS_FILE} does not match the digest"):
        read_export(tmp_path)
    with pytest.raises(UserError, match="give RUN:ID"):
        resolve_source(str(tmp_path / "nowhere"))
    assert resolve_source(f"{run_dir}:g01-c1").name == "steeper"


def selfdisco(*args):
    return subprocess.run([sys.executable, "-m", "selfdisco", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_export_picks_the_best_and_says_so(run_dir, tmp_path):
    result = selfdisco("export", str(run_dir), "--out", str(tmp_path / "best"))
    assert result.returncode == 0, result.stderr
    assert "picked g01-c2 (hinge_exp), the best scored loss" in result.stdout
    assert (tmp_path / "best" / LOSS_FILE).is_file()
    assert "train it again: selfdisco train --from" in result.stdout
    result = selfdisco("export", str(run_dir), "nope")
    assert result.returncode == 2 and "has no candidate 'nope'" in result.stderr
    assert "Traceback" not in result.stderr
    result = selfdisco("export", str(tmp_path / "missing"))
    assert result.returncode == 2 and "no run directory" in result.stderr


def test_train_from_refuses_what_would_change_the_recipe(run_dir):
    result = selfdisco("train", "--from", f"{run_dir}:g01-c1", "--steps", "3")
    assert result.returncode == 2
    assert "--from trains the recorded recipe as it was; leave out --steps" in result.stderr
    result = selfdisco("train", "--from", f"{run_dir}:g09-c9")
    assert result.returncode == 2 and "has no candidate 'g09-c9'" in result.stderr
    result = selfdisco("train", "--preset", "smoke")
    assert result.returncode == 2 and "give --loss and --data, or --from RUN:ID" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["lrml_original", "pfl", "kto_pair"])
def test_every_written_form_exports_as_per_pair_loss(name, tmp_path):
    """The paper's method form (self.beta) and plain forms all become per_pair_loss(..., beta)."""
    from types import SimpleNamespace

    from selfdisco.export.template import loss_module
    from selfdisco.losses import catalog

    code = catalog.get(name).candidate.code
    recipe = SimpleNamespace(name=name, run="run", id="burn", fitness=1.0, stderr=0.1, n=8,
                             task="sentiment", task_preset="smoke", train_seeds=[1], code=code,
                             trl_loss_type="")
    (tmp_path / "exported.py").write_text(loss_module(recipe))
    loss = load_module(tmp_path / "exported.py", f"exported_{name}")
    args = [torch.randn(6) for _ in range(4)]
    torch.testing.assert_close(loss.per_pair_loss(*args, 0.1), compile_loss(code)(*args, 0.1))


def _definition(tree: ast.AST, path: tuple[str, ...]) -> ast.AST:
    for name in path:
        tree = next(node for node in tree.body
                    if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name)
    return tree


def _free_names(node: ast.AST) -> set[str]:
    """Names a definition reads but neither binds nor gets from builtins."""
    import builtins

    bound = {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
             for a in [*n.posonlyargs, *n.args, *n.kwonlyargs, n.vararg, n.kwarg] if a}
    names = [n for n in ast.walk(node) if isinstance(n, ast.Name)]
    bound |= {n.id for n in names if isinstance(n.ctx, ast.Store)}
    return {n.id for n in names if isinstance(n.ctx, ast.Load)} - bound - set(dir(builtins))


def test_the_exported_trainer_carries_the_projects_own_trainer_code(run_dir, tmp_path):
    """_FirstOutputs and the prompt cut (_prepare_dataset) are generated from
    selfdisco/train/trainer.py: an export's trainer.py compiles, holds the same definitions,
    and everything they use is defined in the exported file (no selfdisco import)."""
    import inspect
    import textwrap

    from selfdisco.export.template import SHARED_CODE
    from selfdisco.train import trainer

    write_export(build_recipe(run_dir, match_trl=False), tmp_path)
    text = (tmp_path / TRAINER_FILE).read_text()
    exported = ast.parse(text)
    compile(exported, TRAINER_FILE, "exec")
    imported = [alias.name for node in ast.walk(exported) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module for node in ast.walk(exported) if isinstance(node, ast.ImportFrom)]
    assert not [m for m in imported if m and m.startswith("selfdisco")]
    top_level = {alias.asname or alias.name.split(".")[0] for node in exported.body
                 if isinstance(node, ast.Import | ast.ImportFrom) for alias in node.names}
    top_level |= {node.name for node in exported.body
                  if isinstance(node, ast.ClassDef | ast.FunctionDef)}
    top_level |= {t.id for node in exported.body if isinstance(node, ast.Assign)
                  for t in node.targets if isinstance(t, ast.Name)}
    for path in SHARED_CODE.values():
        ours = ast.parse(textwrap.dedent(inspect.getsource(
            getattr(getattr(trainer, path[0]), path[1]) if len(path) > 1
            else getattr(trainer, path[0])))).body[0]
        theirs = _definition(exported, ("ExportedLossDPOTrainer", *path[1:]) if len(path) > 1
                             else path)
        assert ast.dump(theirs) == ast.dump(ours), path
        assert _free_names(theirs) <= top_level, path
    assert "_FirstOutputs(model)" in text  # the exported _compute_loss records the policy


def test_a_reproduction_scores_under_the_rows_own_fitness_version(run_dir, tmp_path):
    import shutil

    from selfdisco.rundir.archive import Archive

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    best = build_recipe(copy, match_trl=False)
    archive = Archive(copy)
    try:
        row = archive.get(best.id)
        archive.update(row.id, metrics={**row.metrics, "fitness_version": 2})
    finally:
        archive.close()
    assert build_recipe(copy, best.id, match_trl=False).task_options["fitness_version"] == 2

"""selfdisco's Python API: start or resume a discovery, read its archive, screen, compile and
train under a loss, export one. Thin wrappers over what the commands use; `import selfdisco`
exposes them lazily (selfdisco/__init__.py), so importing the package stays light. (Training and
export are train_loss and export_loss: selfdisco.train and selfdisco.export.recipe name modules.)

    import selfdisco

    run_dir = selfdisco.run("smoke")
    best = max((r for r in selfdisco.load_archive(run_dir) if r.fitness is not None),
               key=lambda r: r.fitness)
    selfdisco.export_loss(run_dir, best.id)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfdisco.config import RunConfig, load_config, read_run_config
from selfdisco.errors import UserError
from selfdisco.export.build import build_recipe, write_export
from selfdisco.export.recipe import EXPORT_DIR
from selfdisco.launch.background import run_locked
from selfdisco.launch.checks import check_run
from selfdisco.launch.plan import plan_run
from selfdisco.launch.start import prepare_run_dir, run_finished
from selfdisco.losses import Candidate, load_loss, screen
from selfdisco.losses import compile_loss as compile_code
from selfdisco.presets import DEFAULT_PRESET
from selfdisco.rundir.archive import ARCHIVE_FILE, Archive
from selfdisco.rundir.paths import checkpoints_dir, resolve_run
from selfdisco.tasks import preset_training
from selfdisco.tui.printer import Printer

if TYPE_CHECKING:
    from selfdisco.config import RunConfig
    from selfdisco.losses import Candidate, CompiledLoss, ScreenResult
    from selfdisco.rundir.archive import Row
    from selfdisco.train.result import TrainResult


def run(config: str | Path | RunConfig = "cpu", *, overrides: dict | None = None,
        run_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Start a discovery run and run it to its end, as `selfdisco run --no-tui` does.

    Args:
        config: a preset name (smoke, cpu, ...), a TOML config file, or a RunConfig.
        overrides: settings over the preset or file, nested as in the file, e.g.
            {"discovery": {"generations": 2}, "server": {"url": "http://HOST:PORT/v1"}}.
        run_dir: where the run is written (default: checkpoints/<time>-<preset>).
        progress: print progress lines.

    Returns:
        The run directory (read it with load_archive, export a loss with export_loss).
    """
    if isinstance(config, RunConfig):
        if overrides:
            raise UserError("give overrides with a preset or a config file; change a RunConfig "
                            "directly")
        resolved = config
    elif Path(config).suffix == ".toml":
        resolved = load_config(None, Path(config), overrides)
    else:
        resolved = load_config(str(config), None, overrides)
    if check_run(resolved) is not None:
        plan_run(resolved)
    path = prepare_run_dir(resolved, Path(run_dir) if run_dir else None)
    run_locked(path, resume=False, listeners=_listeners(progress))
    return path


def resume(run: str | Path, *, progress: bool = True) -> Path:
    """Continue a stopped or killed run (a run directory or a run id) until it ends; a run
    that has already finished is left as it is. Returns the run directory."""
    path = resolve_run(run)
    check_run(read_run_config(path))
    if not run_finished(path):
        run_locked(path, resume=True, listeners=_listeners(progress, path))
    return path


def _listeners(progress: bool, run_dir: Path | None = None) -> list:
    return [Printer(run_dir=run_dir)] if progress else []


def load_archive(run: str | Path) -> list[Row]:
    """Every candidate of a run (a run directory or a run id), in the order they were
    proposed: id, name, code, status, fitness, stderr, metrics, ... (rundir.archive.Row)."""
    archive = Archive(resolve_run(run, required=ARCHIVE_FILE))
    try:
        return archive.rows()
    finally:
        archive.close()


def _candidate(loss: str | Candidate, name: str = "loss") -> Candidate:
    """A Candidate from code, a catalog name, a .py or .json file, or a Candidate."""
    if isinstance(loss, Candidate):
        return loss
    if "def " in loss:
        return Candidate(thought="", name=name, code=loss)
    return load_loss(loss)


def screen_loss(loss: str | Candidate, *, beta: float = 0.05) -> ScreenResult:
    """Check a loss statically and on random tensors in the sandbox, as discovery does.

    Args:
        loss: its code (one function), a catalog name, a .py or .json file, or a Candidate.
        beta: the beta its shape is computed at.

    Returns:
        A ScreenResult: ok, the reason when not, its fingerprint and shape.
    """
    return screen(_candidate(loss), beta=beta)


def compile_loss(code: str) -> CompiledLoss:
    """Statically check loss code and build its function, called as
    fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
    reference_rejected_logps, beta) -> per-pair losses (raises CodeRejected when refused)."""
    return compile_code(code)


def train_loss(loss: str | Candidate | Callable, data: Any, *, preset: str = DEFAULT_PRESET,
          task: str | None = None, model: str | None = None, out_dir: str | Path | None = None,
          ref_cache: str | Path | None = None, **settings: Any) -> TrainResult:
    """Fine-tune a LoRA adapter on preference pairs under a loss, as `selfdisco train` does.

    Args:
        loss: code, a catalog name, a .py or .json file, a Candidate (each screened first), or
            a callable fn(pc, pr, rc, rr, beta) -> per-pair losses (used as it is).
        data: preference pairs: a file, a Hub dataset id, a list of {prompt, chosen,
            rejected} dicts or a datasets.Dataset.
        preset: a preset name (selfdisco.presets.PRESETS): train as discovery does on it, with
            its task's training recipe and its policy.
        task: the task whose recipe for the preset to use (default: the preset's task).
        model: the base model (default: the preset's policy).
        out_dir: receives adapter/, metrics.json and train_log.jsonl (default:
            checkpoints/train/api-<time>).
        ref_cache: a reference log-prob cache directory (default: none, computed each step).
        settings: training settings over the recipe's (selfdisco.train.settings.TrainSettings
            fields), e.g. max_steps=8, learning_rate=1e-3, beta=0.1.

    Returns:
        A TrainResult (status, steps_done, metrics, adapter_path, ...).
    """
    # lazy: loads torch, transformers
    from selfdisco.train.adapter import train_adapter

    config, recipe = preset_training(preset, task)
    recipe = recipe.with_overrides(**settings)
    kwargs: dict[str, Any] = {"loss_fn": loss} if callable(loss) else {}
    if not kwargs:
        candidate = _candidate(loss)
        screened = screen_loss(candidate, beta=recipe.beta)
        if not screened.ok:
            raise UserError(f"the loss {candidate.name!r} failed screening: {screened.reason}")
        kwargs["candidate"] = candidate
    out = Path(out_dir) if out_dir else (
        checkpoints_dir() / "train" / f"api-{time.strftime('%Y%m%d-%H%M%S')}")
    return train_adapter(model_path=model or config.models.policy, data=data, settings=recipe,
                         out_dir=out, ref_cache_dir=ref_cache, **kwargs)


def export_loss(run: str | Path, id: str | None = None, *,
                out_dir: str | Path | None = None) -> Path:
    """Write a run's loss (`id`, default the best scored one) as loss.py, trainer.py and
    recipe.toml, as `selfdisco export` does; returns the directory written."""
    run_dir = resolve_run(run, required=ARCHIVE_FILE)
    recipe = build_recipe(run_dir, id)
    out = Path(out_dir) if out_dir else run_dir / EXPORT_DIR / recipe.id
    write_export(recipe, out)
    return out

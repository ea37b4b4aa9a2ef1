"""`train_adapter`: one LoRA preference-training run under a runtime loss.

Heavy module (transformers at import); `selfdisco.train` imports it on first use.

Bad input (data, loss spec) raises UserError before any model is loaded. Once training starts,
nothing a candidate loss does escapes as an exception: a non-finite loss or gradient gives status
"diverged", any other error status "failed", each with a one-line `error`. Candidate code trains
in a child process the operating system confines (train/confined.py) wherever it can be
confined; a loss function the caller passes trains in the caller's process.
"""

from __future__ import annotations

import gc
import json
import math
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from selfdisco.errors import UserError, one_line
from selfdisco.llm.models import model_identity, resolve_model
from selfdisco.losses import compile_loss, confine
from selfdisco.train.confined import train_confined
from selfdisco.train.data import load_preferences
from selfdisco.train.refcache import RefCache, reference_digest
from selfdisco.train.result import TRAIN_DIVERGED, TRAIN_FAILED, TRAIN_OK, TrainResult
from selfdisco.train.settings import TrainSettings

# progress(step, max_steps, logs): called after each logged optimizer step.
Progress = Callable[[int, int, dict[str, Any]], None]

ADAPTER_DIR = "adapter"
METRICS_FILE = "metrics.json"
LOG_FILE = "train_log.jsonl"


def train_adapter(*, model_path: str, data: Any, settings: TrainSettings, out_dir: str | Path,
                  loss_fn: Callable | None = None, candidate: Any = None,
                  ref_cache_dir: str | Path | None = None, seed: int | None = None,
                  progress: Progress | None = None) -> TrainResult:
    """Fine-tune a LoRA adapter on preference pairs under a runtime loss.

    Args:
        model_path: the policy's base model: a bundled model's name, a local path or a hub id.
        data: preference pairs, anything `load_preferences` accepts, or a `datasets.Dataset`.
        settings: the recipe (a task's, selfdisco.tasks.run_train_settings).
        out_dir: receives adapter/, metrics.json and train_log.jsonl.
        loss_fn: fn(pc, pr, rc, rr, beta) -> per-example losses. Give this or `candidate`.
        candidate: a screened Candidate; its code is compiled with selfdisco.losses.compile_loss
            and trains confined (losses/confine.py; ConfinementError where SELFDISCO_CONFINE
            requires confinement and this machine has none).
        ref_cache_dir: the shared reference log-prob cache; None computes them every batch.
        seed: overrides settings.seed.
        progress: optional progress(step, max_steps, logs) callback.

    Returns:
        A TrainResult; metrics.json in out_dir holds the same but metrics["confined"] (whether
        the loss trained in a confined child).
    """
    if (loss_fn is None) == (candidate is None):
        raise ValueError("give exactly one of loss_fn or candidate")
    dataset = _as_dataset(data)
    if seed is not None:
        settings = settings.with_overrides(seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if candidate is None or not confine.require().confined:
        result = train_in_process(model_path=model_path, data=dataset, settings=settings,
                                  out_dir=out_dir, loss_fn=loss_fn, candidate=candidate,
                                  ref_cache_dir=ref_cache_dir, progress=progress)
        result.metrics["confined"] = False
        return result
    (out_dir / LOG_FILE).unlink(missing_ok=True)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    if ref_cache_dir:  # the child reads the cache but may not write it
        fill_reference(model_path=model_path, dataset=dataset, settings=settings,
                       out_dir=out_dir, ref_cache_dir=ref_cache_dir)
    result = train_confined(model_path=model_path, dataset=dataset, settings=settings,
                            out_dir=out_dir, candidate=candidate, ref_cache_dir=ref_cache_dir,
                            progress=progress, files={"adapter": ADAPTER_DIR,
                                                      "metrics": METRICS_FILE, "log": LOG_FILE})
    result.metrics["confined"] = True
    return result


def train_in_process(*, model_path: str, data: Any, settings: TrainSettings,
                     out_dir: str | Path, loss_fn: Callable | None = None, candidate: Any = None,
                     ref_cache_dir: str | Path | None = None, progress: Progress | None = None
                     ) -> TrainResult:
    """train_adapter's training, in this process (the confined child's, or where candidate
    code cannot be confined)."""
    dataset = _as_dataset(data)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / LOG_FILE
    log_path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / ADAPTER_DIR, ignore_errors=True)  # never leave a stale adapter

    run_log = None
    try:
        if candidate is not None:
            loss_fn = compile_loss(candidate.code)
        trainer = build_trainer(model_path=model_path, dataset=dataset, settings=settings,
                                loss_fn=loss_fn, out_dir=out_dir, ref_cache_dir=ref_cache_dir)
        run_log = RunLog(log_path, trainer.guard, progress)
        trainer.add_callback(run_log)
        trainer.train()
        result = _result(trainer, run_log)
        if result.ok:
            adapter = out_dir / ADAPTER_DIR
            trainer.model.save_pretrained(adapter)
            result.adapter_path = str(adapter)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a failing candidate must not take the run down
        result = TrainResult(status=TRAIN_FAILED, error=one_line(err),
                             steps_done=run_log.steps if run_log else 0,
                             metrics=dict(run_log.last) if run_log else {})
    trainer = None  # the worker scores next: free the model before the KL model loads
    release_memory()
    result.peak_rss_mb = peak_rss_mb()
    record = {**result.to_dict(), "settings": settings.to_dict(), "model": str(model_path)}
    (out_dir / METRICS_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    return result


def fill_reference(*, model_path: str, dataset: Any, settings: TrainSettings, out_dir: Path,
                   ref_cache_dir: str | Path) -> None:
    """Compute and store the reference log-probs of these pairs unless the cache holds them
    (no candidate code runs: a confined training only reads the cache)."""
    cache = RefCache(Path(ref_cache_dir))
    digest = reference_digest(model_identity(resolve_model(model_path)), dataset, settings)
    if cache.known(digest):
        return
    trainer = build_trainer(model_path=model_path, dataset=dataset, settings=settings,
                            loss_fn=_reference_only, out_dir=out_dir, ref_cache_dir=ref_cache_dir)
    cache.remember(digest, trainer.ref_cache_path.stem)
    trainer = None
    release_memory()


def _reference_only(*args: Any) -> Any:
    raise RuntimeError("a trainer built to fill the reference cache does not train")


def release_memory() -> None:
    """Collect a finished trainer's reference cycles (its model stayed allocated until the
    next collection: 14.3 GiB for a 7B model on a GPU) and return cached GPU blocks."""
    # lazy: loads torch
    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def build_trainer(*, model_path: str, dataset, settings: TrainSettings, loss_fn: Callable,
                  out_dir: Path, ref_cache_dir: str | Path | None = None):
    """A RuntimeLossDPOTrainer for this recipe, with the reference cache attached."""
    # lazy: loads transformers
    from transformers.trainer_callback import PrinterCallback

    # lazy: loads torch, transformers
    from selfdisco.train.trainer import RuntimeLossDPOTrainer

    parts = trainer_parts(model_path, settings, out_dir)
    trainer = RuntimeLossDPOTrainer(
        parts["model"], args=parts["args"], train_dataset=dataset,
        processing_class=parts["tokenizer"], peft_config=parts["peft_config"], loss_fn=loss_fn,
        ref_cache=RefCache(Path(ref_cache_dir)) if ref_cache_dir else None,
        model_identity=model_identity(parts["path"]),
        max_prompt_length=settings.max_prompt_length,
    )
    trainer.remove_callback(PrinterCallback)  # RunLog writes the log; no dicts on stdout
    return trainer


def trainer_parts(model_path: str, settings: TrainSettings, out_dir: Path,
                  **config_overrides) -> dict[str, Any]:
    """The model, tokenizer, LoRA config and DPOConfig of a recipe (any DPOTrainer takes them).

    Returns a dict with model, tokenizer, peft_config, args and path (the resolved model path).
    """
    # lazy: loads torch
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    if not settings.use_cpu and not torch.cuda.is_available():
        raise UserError("these training settings need a CUDA GPU; use the cpu or smoke preset")
    path = resolve_model(model_path)
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().is_dir():
        raise UserError(f"model directory {path} does not exist")
    dtype = torch.bfloat16 if settings.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # No modules_to_save and attention projections only: the adapter stays loadable by vLLM.
    lora = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                      lora_dropout=settings.lora_dropout,
                      target_modules=list(settings.target_modules), bias="none",
                      task_type="CAUSAL_LM")
    args = DPOConfig(**{
        "output_dir": str(out_dir), "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.grad_accum,
        "learning_rate": settings.learning_rate, "lr_scheduler_type": settings.lr_scheduler,
        "warmup_steps": settings.warmup_ratio, "beta": settings.beta,
        "max_length": settings.max_length, "seed": settings.seed,
        "use_cpu": settings.use_cpu, "bf16": settings.bf16,
        "gradient_checkpointing": settings.gradient_checkpointing,
        "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True,
        "report_to": list(settings.report_to),  # trackers get TRL's logs (tracking.py)
        **config_overrides,
    })
    return {"model": model, "tokenizer": tokenizer, "peft_config": lora, "args": args,
            "path": path}


def _as_dataset(data: Any):
    # lazy: loads datasets
    from datasets import Dataset

    return data if isinstance(data, Dataset) else load_preferences(data)


def _result(trainer, run_log: RunLog) -> TrainResult:
    guard = trainer.guard
    metrics = {**run_log.last, "ref_cache": trainer.ref_cache_status}
    if guard.reason is not None:
        step = guard.step if guard.step is not None else run_log.steps
        return TrainResult(status=TRAIN_DIVERGED, steps_done=step, metrics=metrics,
                           seconds_per_step=run_log.seconds_per_step(),
                           error=f"diverged at step {step}: {guard.reason}")
    return TrainResult(status=TRAIN_OK, steps_done=trainer.state.global_step, metrics=metrics,
                       seconds_per_step=run_log.seconds_per_step())


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLog(TrainerCallback):
    """Times each step, appends every log to train_log.jsonl, keeps the last finite one."""

    def __init__(self, path: Path, guard, progress: Progress | None) -> None:
        self.path, self.guard, self.progress = path, guard, progress
        self.last: dict[str, Any] = {}
        self.step_seconds: list[float] = []
        self.steps = 0
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds.append(time.perf_counter() - self._started)
        self.steps = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: _finite_or_none(v) for k, v in (logs or {}).items()}
        record = {"step": state.global_step, **logs}
        is_step = "loss" in logs
        if is_step and self.guard.reason is not None and state.global_step == self.guard.step:
            record.update(loss=None, diverged=self.guard.reason)
        elif is_step:
            self.last = dict(logs)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if is_step and self.progress is not None:
            self.progress(state.global_step, state.max_steps, record)

    def seconds_per_step(self) -> float | None:
        timed = self.step_seconds[1:] or self.step_seconds
        return sum(timed) / len(timed) if timed else None

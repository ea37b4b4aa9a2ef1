"""lm-eval on the base model and each loss's policy, with lm-eval's own model back-ends.

`lm_eval.simple_evaluate` runs the tasks the user names (lm_eval_tasks; default the shipped
selfdisco_sentiment_mc, 40 movie reviews read from selfdisco/data/lmeval/, so it runs offline)
with model "hf" (transformers, the adapter given as `peft=`) or "vllm" (the adapter as a LoRA
request). Standard tasks by name need the Hub for their data. The adapters are the held-out
ones (trained at the run's beta with a fresh seed, or reused from another held-out protocol
that trained the same point), or with lm_eval_adapters=run the ones the run kept from discovery.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError
from selfdisco.formatting import format_rate
from selfdisco.heldout import Point, session
from selfdisco.llm.models import resolve_model
from selfdisco.rundir.archive import Archive
from selfdisco.rundir.events import HELDOUT_DONE, HELDOUT_FAILED
from selfdisco.rundir.paths import DATA_DIR
from selfdisco.tasks import run_train_settings

SHIPPED_TASKS = DATA_DIR / "lmeval"
SHIPPED_TASK = "selfdisco_sentiment_mc"
BACKENDS = ("hf", "vllm")
ADAPTER_SOURCES = ("heldout", "run")
BASE_ID = "base-model"  # the base model's point (no loss, no adapter)
RUN_SEED = -1  # the seed of a point whose adapter the run trained (lm_eval_adapters=run)
INSTALL_HINT = "install it with: pip install 'selfdisco[eval]' (scripts/setup.sh does)"


@dataclass(frozen=True)
class LmEvalSettings:
    """The lmeval protocol's options (`selfdisco heldout --option KEY=VALUE`)."""

    lm_eval_tasks: str = SHIPPED_TASK
    """lm-eval task names, comma-separated (the shipped task runs offline; others need the
    Hub)."""
    lm_eval_limit: int = 0
    """Evaluate only the first N documents of each task (0: all)."""
    lm_eval_backend: str = "hf"
    """hf (transformers with peft=ADAPTER) or vllm (a LoRA request; needs a GPU)."""
    lm_eval_batch_size: int = 8
    """Documents per forward pass."""
    lm_eval_adapters: str = "heldout"
    """heldout: adapters trained for the held-out evaluation; run: the run's own adapters."""

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> LmEvalSettings:
        """The settings from the options this protocol knows; UserError for a bad value."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in options:
                raw = str(options[f.name]).strip()
                if isinstance(getattr(cls(), f.name), int):
                    if not raw.isdigit():
                        raise UserError(f"option {f.name}={raw!r}: give a whole number >= 0")
                    values[f.name] = int(raw)
                else:
                    values[f.name] = raw
        settings = cls(**values)
        if settings.lm_eval_backend not in BACKENDS:
            raise UserError(f"option lm_eval_backend={settings.lm_eval_backend!r}: choose "
                            f"{' or '.join(BACKENDS)}")
        if settings.lm_eval_adapters not in ADAPTER_SOURCES:
            raise UserError(f"option lm_eval_adapters={settings.lm_eval_adapters!r}: choose "
                            f"{' or '.join(ADAPTER_SOURCES)}")
        if not settings.task_names():
            raise UserError("option lm_eval_tasks is empty: name at least one lm-eval task")
        return settings

    def task_names(self) -> list[str]:
        return [name.strip() for name in self.lm_eval_tasks.split(",") if name.strip()]


def model_args(backend: str, model_path: str, adapter_path: str | None,
               device: str) -> dict[str, Any]:
    """lm-eval's model_args for the base model (adapter_path None) or base + adapter."""
    if backend == "vllm":
        args: dict[str, Any] = {"pretrained": model_path, "dtype": "auto"}
        if adapter_path:
            args.update(lora_local_path=str(adapter_path), max_lora_rank=64)
        return args
    args = {"pretrained": model_path, "dtype": "float32" if device == "cpu" else "auto",
            "device": device}
    if adapter_path:
        args["peft"] = str(adapter_path)
    return args


def task_manager(tasks: list[str]) -> Any:
    """lm-eval's TaskManager with the shipped tasks included; UserError for an unknown task or
    a missing lm-eval."""
    try:
        # lazy: loads lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError(f"lm-eval is not installed: {INSTALL_HINT}") from None
    # Indexing lm-eval's own tasks takes ~20 s on 2 cores: only when a task needs them.
    shipped = {path.stem for path in SHIPPED_TASKS.glob("*/*.yaml")}
    manager = TaskManager(include_path=str(SHIPPED_TASKS),
                          include_defaults=not set(tasks) <= shipped)
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise UserError(f"unknown lm-eval task(s) {', '.join(unknown)}: give names lm-eval "
                        f"knows (`lm_eval ls tasks`), e.g. the shipped {SHIPPED_TASK}")
    return manager


def run_lm_eval(model_path: str, adapter_path: str | None, tasks: list[str], *,
             backend: str = "hf", limit: int = 0, batch_size: int = 8,
             device: str | None = None, manager: Any = None) -> dict[str, dict[str, float]]:
    """Each task's metrics for the base model or base + adapter, e.g.
    {"selfdisco_sentiment_mc": {"acc": 0.6, "acc_stderr": 0.08, ...}, ...}."""
    manager = manager or task_manager(tasks)
    # lazy: loads lm_eval
    import lm_eval

    device = device or _default_device()
    try:
        output = lm_eval.simple_evaluate(
            model=backend, model_args=model_args(backend, model_path, adapter_path, device),
            tasks=tasks, task_manager=manager, limit=limit or None, batch_size=batch_size)
    except ImportError as err:  # the vllm back-end without vllm, or peft missing
        raise UserError(f"lm-eval's {backend} back-end cannot run here ({err})") from None
    except ConnectionError as err:  # a standard task's data set is on the Hub
        raise UserError(f"lm-eval could not load the data of {', '.join(tasks)} ({err}); "
                        f"standard tasks need the Hugging Face Hub; offline, use the shipped "
                        f"{SHIPPED_TASK}") from None
    return {task: _metrics(values) for task, values in output["results"].items()}


def _metrics(values: dict[str, Any]) -> dict[str, float]:
    """{"acc,none": 0.6, "acc_stderr,none": 0.08, "alias": ...} -> {"acc": 0.6, ...}."""
    out = {}
    for key, value in values.items():
        metric, _, _ = key.partition(",")
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and metric != "sample_len":
            out[metric] = float(value)
    return out


def _default_device() -> str:
    # lazy: loads torch
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# The protocol (selfdisco.heldout): the base model, then each loss's adapter.

def points(ctx: Any) -> list[Any]:
    beta = run_train_settings(ctx.config).beta
    from_run = LmEvalSettings.from_options(ctx.options).lm_eval_adapters == "run"
    seed = RUN_SEED if from_run else ctx.seeds[0]
    return [Point("lmeval", BASE_ID, 0.0, 0)] + [Point("lmeval", loss.id, beta, seed)
                                                for loss in ctx.losses]


def run(ctx: Any) -> None:
    settings = LmEvalSettings.from_options(ctx.options)
    todo = [point for point in points(ctx) if not ctx.done(point)]
    if not todo:
        return
    tasks = settings.task_names()
    manager = task_manager(tasks)
    model_path = resolve_model(ctx.config.models.policy)
    losses = {loss.id: loss for loss in ctx.losses}
    for point in todo:
        started = time.perf_counter()
        loss = losses.get(point.loss_id)
        about = {"loss_name": loss.name if loss else "base model", "tasks": tasks,
                 "backend": settings.lm_eval_backend, "limit": settings.lm_eval_limit}
        adapter = None
        if loss is not None:
            adapter, reason = _adapter(ctx, point, loss, settings)
            if adapter is None:
                ctx.record(point, {**about, "reason": reason}, status=HELDOUT_FAILED)
                continue
        ctx.emit("log", level="info", message=f"lmeval: {about['loss_name']} on "
                 f"{', '.join(tasks)} ({settings.lm_eval_backend} back-end)")
        results = run_lm_eval(model_path, adapter, tasks, backend=settings.lm_eval_backend,
                           limit=settings.lm_eval_limit,
                           batch_size=settings.lm_eval_batch_size, manager=manager)
        summary = ", ".join(f"{task} acc {format_rate(values['acc'])}"
                            for task, values in results.items() if "acc" in values)
        ctx.record(point, {**about, "adapter": adapter, "results": results,
                           "seconds": round(time.perf_counter() - started, 1),
                           "summary": summary or "no accuracy metric"})


def _adapter(ctx: Any, point: Any, loss: Any,
             settings: LmEvalSettings) -> tuple[str | None, str]:
    if settings.lm_eval_adapters == "heldout":
        # lazy: loads numpy
        from selfdisco.heldout.pairwise import heldout_adapter

        return heldout_adapter(ctx, point, loss)

    archive = Archive(ctx.run_dir)
    try:
        row = archive.get(loss.id)
    finally:
        archive.close()
    kept = (row.metrics or {}).get("adapter") if row else None
    if kept and not Path(kept).is_absolute() and not Path(kept).exists():
        kept = str(Path(ctx.run_dir).resolve().parent.parent / kept)
    if kept and (Path(kept) / "adapter_config.json").is_file():
        return kept, ""
    return None, (f"the run kept no adapter for {loss.name} (a reference or a cached result); "
                  "use --option lm_eval_adapters=heldout to train one")


def seconds_per_point(archive: Any) -> float | None:
    """See session.seconds_per_point."""
    return session.seconds_per_point(archive, "lmeval")


def report_lines(rows: list[Any], run_dir: Path) -> list[str]:
    """The report's lm-eval subsection: per policy, each task's accuracy with its error."""
    done = [row for row in rows if row.status == HELDOUT_DONE]
    lines = ["### lm-eval", ""]
    if done:
        tasks = list(done[0].metrics.get("results", {}))
        first = done[0].metrics
        limit = f", first {first['limit']} documents" if first.get("limit") else ""
        lines += [f"lm-eval {first.get('backend')} back-end{limit}; accuracy ± standard error "
                  "(acc_norm in brackets where the task has it).", "",
                  "| policy | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
        for row in done:
            results = row.metrics.get("results", {})
            cells = [_cell(results.get(task, {})) for task in tasks]
            source = " (the run's adapter)" if row.seed == RUN_SEED else ""
            lines.append(f"| {row.metrics.get('loss_name', row.loss_id)}{source} | "
                         + " | ".join(cells) + " |")
    for row in rows:
        if row.status != HELDOUT_DONE:
            lines.append(f"- {row.metrics.get('loss_name', row.loss_id)}: failed "
                         f"({row.metrics.get('reason', 'no reason recorded')})")
    return lines + [""]


def _cell(values: dict[str, float]) -> str:
    if "acc" not in values:
        return "-"
    text = format_rate(values["acc"], values.get("acc_stderr"))
    if "acc_norm" in values:
        text += f" ({format_rate(values['acc_norm'])})"
    return text

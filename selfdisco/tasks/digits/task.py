"""digits: the paper's classification case study in miniature.

The candidate is a classification loss `fn(logits, targets) -> Tensor`: logits is a (B, C) float
tensor, targets a (B,) int64 tensor of class indices; it returns per-example losses of shape (B,)
(a 0-dim scalar is accepted too) and the mean is the training loss. Fitness is the validation
accuracy of a small MLP trained under that loss for a fixed budget on scikit-learn's bundled
digits data (8x8 images, 10 classes), with a fixed split and seed. The test split apart from
validation is read only by held-out evaluation (splits.py; eval_split = "test").

Candidate code is evaluated confined (Evaluations): a sandbox server (losses/sandbox.py) under
the operating system's confinement imports torch once and forks a child per evaluation, so no
candidate's changes to memory (a monkeypatched torch function, say) reach the next candidate or
baseline, and a crash, hang or memory bomb ends only its child. A fresh process per candidate
(about 2 s to import torch) would cost several times the evaluation itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from selfdisco import stats
from selfdisco.errors import UserError
from selfdisco.losses import confine
from selfdisco.losses.compiler import compile_loss
from selfdisco.losses.sandbox import Sandbox
from selfdisco.losses.static import CodeRejected
from selfdisco.tasks.base import EvaluationError, Fitness, TaskContext, apply_options
from selfdisco.tasks.digits.splits import (
    EVAL_SPLITS,
    SPLIT_VERSION,
    load_split,
    run_split_version,
    split_indices,
)


class Diverged(EvaluationError):
    """Training met a non-finite loss or gradient."""


CROSS_ENTROPY = '''
def cross_entropy(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")
'''


@dataclass(frozen=True)
class DigitsSettings:
    hidden: int = 64
    """Width of the MLP's one hidden layer."""
    epochs: int = 20
    """Passes over the training split (the fixed budget)."""
    batch_size: int = 64
    learning_rate: float = 1e-3
    """Adam's learning rate."""
    validation_fraction: float = 0.3
    """Share of the 1797 images held out from training (stratified, fixed seed): all of it
    validation (split version 1), or half validation and half test (version 2)."""
    split_seed: int = 0
    """Seed of the splits; fixed so every candidate sees the same split."""
    split_version: int = SPLIT_VERSION
    """2: a test split apart from validation; 1: no test split (runs recorded before it)."""
    eval_split: str = "validation"
    """Which split the fitness is measured on: "validation" (the search selects on it) or
    "test" (held-out evaluation only; split version 2)."""
    max_seconds: float = 30.0
    """A candidate that has not finished training by then fails (too slow)."""


def compile_classification_loss(code: str) -> Callable:
    """Check candidate code with the loss library's allow-list and build its fn(logits, targets).

    Raises EvaluationError with the check's one-line reason, or when the code's top level fails.
    """
    try:
        return compile_loss(code, kind="classification")
    except CodeRejected as err:
        raise EvaluationError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - any error in candidate code is the candidate's
        raise EvaluationError(f"the code does not run: {type(err).__name__}: {err}") from None


def train_and_score(loss_fn: Callable, settings: DigitsSettings, seed: int = 0) -> Fitness:
    """Train the MLP under `loss_fn` and return its accuracy on settings.eval_split (the
    validation split unless held-out evaluation asks for test) as the fitness.

    Raises EvaluationError when the loss has the wrong shape, is not finite, has no gradient,
    or training runs past settings.max_seconds.
    """
    # lazy: loads torch
    import torch

    x_train, y_train, x_val, y_val = load_split(settings)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-wide MLP runs fastest on one thread, and shares the CPU
    try:
        return _train(loss_fn, settings, seed, x_train, y_train, x_val, y_val)
    finally:
        torch.set_num_threads(threads)


def _train(loss_fn: Callable, settings: DigitsSettings, seed: int, x_train: Any, y_train: Any,
           x_val: Any, y_val: Any) -> Fitness:
    # lazy: loads torch
    import torch

    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(x_train.shape[1], settings.hidden), torch.nn.ReLU(),
        torch.nn.Linear(settings.hidden, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    steps, last_loss = 0, math.nan
    for epoch in range(settings.epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), settings.batch_size):
            index = order[start:start + settings.batch_size]
            logits = model(x_train[index])
            loss = _batch_loss(loss_fn, logits, y_train[index], steps)
            optimizer.zero_grad()
            loss.backward()
            _check_gradients(model, steps)
            optimizer.step()
            steps += 1
            last_loss = float(loss.detach())
            if time.perf_counter() - started > settings.max_seconds:
                raise EvaluationError(f"training took longer than {settings.max_seconds:.0f} s "
                                      f"(stopped in epoch {epoch + 1} of {settings.epochs})")
    with torch.no_grad():
        val_correct = (model(x_val).argmax(dim=1) == y_val).float()
        train_accuracy = float((model(x_train).argmax(dim=1) == y_train).float().mean())
    n = len(y_val)
    accuracy = float(val_correct.mean())
    per_example = [float(x) for x in val_correct]
    stderr = stats.proportion_stderr(accuracy, n)
    metrics = {"train_accuracy": train_accuracy, "final_train_loss": last_loss, "steps": steps,
               "seconds": round(time.perf_counter() - started, 3),
               "metric": f"{settings.eval_split} accuracy (binomial stderr)",
               "eval_split": settings.eval_split, "split_version": settings.split_version,
               "per_prompt": per_example}
    return Fitness(value=accuracy, stderr=stderr, metrics=metrics, n=n)


def _batch_loss(loss_fn: Callable, logits: Any, targets: Any, step: int) -> Any:
    # lazy: loads torch
    import torch

    try:
        losses = loss_fn(logits, targets)
    except Exception as err:  # noqa: BLE001 - any error in candidate code is the candidate's
        raise EvaluationError(f"the loss raised {type(err).__name__}: {err}") from None
    if not isinstance(losses, torch.Tensor):
        raise EvaluationError(f"the loss returned {type(losses).__name__}, not a tensor")
    if losses.dim() != 0 and tuple(losses.shape) != (logits.shape[0],):
        raise EvaluationError(f"the loss returned shape {tuple(losses.shape)}, expected "
                              f"({logits.shape[0]},) per-example losses")
    if not losses.requires_grad:
        raise EvaluationError("the loss does not depend on the logits (no gradient)")
    loss = losses.mean()
    if not torch.isfinite(loss):
        raise Diverged(f"diverged at step {step}: the loss is not finite")
    return loss


def _check_gradients(model: Any, step: int) -> None:
    # lazy: loads torch
    import torch

    for parameter in model.parameters():
        if parameter.grad is not None and not torch.isfinite(parameter.grad).all():
            raise Diverged(f"diverged at step {step}: a gradient is not finite")


EVALUATION_ENTRIES = {"evaluate": "selfdisco.tasks.digits.task:evaluate_job"}
EVALUATION_MEMORY_MB = 2048  # on top of the sandbox server's own address space


def evaluate_job(code: str | None, options: dict, seed: int, fidelity: float = 1.0) -> dict:
    """One evaluation, in a sandbox child: `code` trained for `fidelity` of the task's epochs
    (no code: the untrained network). {"ok": True, "fitness": Fitness.to_dict()} or
    {"ok": False, "cause": "diverged" or "candidate", "reason"}."""
    settings = DigitsTask().settings(TaskContext(options=dict(options)))
    epochs = 0 if code is None else max(1, math.ceil(settings.epochs * fidelity))
    settings = replace(settings, epochs=epochs)
    try:
        loss_fn = compile_classification_loss(code) if code is not None else None
        fitness = train_and_score(loss_fn, settings, seed=seed)
    except Diverged as err:
        return {"ok": False, "cause": "diverged", "reason": str(err)}
    except EvaluationError as err:
        return {"ok": False, "cause": "candidate", "reason": str(err)}
    fitness.metrics["confined"] = confine.active()
    return {"ok": True, "fitness": fitness.to_dict()}


def warm_up() -> None:
    """Read the data and train one epoch under cross-entropy (no candidate code), so that the
    evaluation server's children start with torch's first-use work done: a child then trains
    in about 0.2 s instead of 1.5 s (AMD EPYC, default settings)."""
    # lazy: loads torch
    import torch.nn.functional as F

    train_and_score(lambda logits, targets: F.cross_entropy(logits, targets, reduction="none"),
                    replace(DigitsSettings(), epochs=1))


class Evaluations:
    """A confined sandbox server that evaluates classification losses, a child for each."""

    def __init__(self, timeout_s: float = 120.0) -> None:
        self.timeout_s = timeout_s
        self.sandbox = Sandbox(EVALUATION_ENTRIES,
                               warm=["selfdisco.tasks.digits.task:warm_up"])

    def run(self, code: str | None, options: dict, seed: int, fidelity: float = 1.0) -> dict:
        """evaluate_job's dict, or {"ok": False, "cause": "timeout", "killed" or "error",
        "reason"} when the child returned none."""
        return self.sandbox.call("evaluate", {"code": code, "options": dict(options),
                                              "seed": seed, "fidelity": fidelity},
                                 timeout_s=self.timeout_s, memory_mb=EVALUATION_MEMORY_MB)

    def close(self) -> None:
        self.sandbox.close()

    def __enter__(self) -> Evaluations:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class DigitsTask:
    """Classification-loss discovery on scikit-learn's digits (see module docstring)."""

    name = "digits"
    kind = "classification"
    description = "validation accuracy of a small MLP on scikit-learn's digits, per candidate loss"
    needs_judge = False

    def settings(self, ctx: TaskContext) -> DigitsSettings:
        options = {k: v for k, v in ctx.options.items() if k != "preset"}
        settings = apply_options(DigitsSettings(), options)
        if settings.split_version not in (1, SPLIT_VERSION):
            raise UserError(f"split_version must be 1 or {SPLIT_VERSION}, not "
                            f"{settings.split_version}")
        if settings.eval_split not in EVAL_SPLITS:
            raise UserError(f"eval_split must be {' or '.join(EVAL_SPLITS)}, not "
                            f"{settings.eval_split!r}")
        if settings.eval_split == "test" and settings.split_version == 1:
            raise UserError("eval_split = test needs split_version 2: split version 1 (runs "
                            "recorded before the test split) has no test split")
        return settings

    def check_options(self, preset: str, options: dict[str, Any]) -> None:
        """UserError for an unknown or mistyped option, or a search told to select on the
        test split (only held-out evaluation reads it)."""
        if self.settings(TaskContext(preset=preset, options=dict(options))).eval_split != \
                "validation":
            raise UserError("eval_split = test is for held-out evaluation (`selfdisco "
                            "heldout`): the search selects on the validation split; remove "
                            "the option")

    def recorded_options(self, options: dict[str, Any], recorded: list[dict]) -> dict[str, Any]:
        """The split a run's evaluations used (run_split_version): a run resumed from before
        the test split keeps its old split."""
        return {"split_version": run_split_version(options, recorded)}

    def heldout_options(self, preset: str, options: dict[str, Any], *, unused: bool,
                        sampling_seed: int, count: int | None,
                        recorded: list[dict]) -> tuple[dict[str, Any], str, str]:
        """The task options that score held-out evaluations on the test split (unused) or on
        the validation split the search selected on, with a sentence saying which.

        Args:
            preset, options: the run's.
            unused: score on images the search never read (the test split).
            sampling_seed: unused here: scoring an image samples nothing.
            count: must be None: every image of the split is scored.
            recorded: the metrics of the run's scored evaluations; one without a
                split_version was scored by a selfdisco before the test split (version 1).

        Returns:
            (options, the sentence, why the search's split stands in for the test split: empty
            unless an old run has none).
        """
        if count is not None:
            raise UserError("--prompt-count is for the sentiment task: digits scores every "
                            "image of its split")
        version = run_split_version(options, recorded)
        settings = self.settings(TaskContext(preset=preset,
                                             options={**options, "split_version": version}))
        splits = split_indices(settings)
        if unused and version == SPLIT_VERSION:
            return ({"split_version": version, "eval_split": "test"},
                    f"the digits test split ({len(splits.test)} images), which the search never "
                    f"read: it trained on {len(splits.train)} images and selected on a "
                    f"validation split of {len(splits.validation)}", "")
        old = "" if version == SPLIT_VERSION else (
            "this run was recorded before the digits task had a test split (split version 1) "
            "and keeps its split, so it has no test split")
        text = (f"the digits validation split ({len(splits.validation)} images) the search "
                "selected on (not held out)")
        if unused:  # asked for the test split: the old split stands in, and says why
            return {"split_version": version, "eval_split": "validation"}, text, old
        return ({"split_version": version, "eval_split": "validation"},
                text + (f": {old}" if old else ""), "")

    def evaluate_loss(self, ctx: TaskContext, loss: Callable | str) -> Fitness:
        """Fitness of a classification loss: candidate code defining one (evaluated confined,
        see Evaluations), or a callable (the caller's own function, run in this process)."""
        if not isinstance(loss, str):
            return train_and_score(loss, self.settings(ctx), seed=ctx.seed)
        self.settings(ctx)  # a bad option is the caller's error, before a server starts
        with Evaluations() as evaluations:
            result = evaluations.run(loss, ctx.options, ctx.seed)
        if not result.get("ok"):
            raise EvaluationError(result.get("reason") or "the evaluation failed")
        return Fitness.from_dict(result["fitness"])

    def score(self, ctx: TaskContext, adapter_path: str | None = None) -> Fitness:
        """The cross-entropy baseline (digits has no adapters: use evaluate_loss for a loss)."""
        if adapter_path is not None:
            raise UserError("the digits task scores classification losses, not adapters; "
                            "give a loss instead of --adapter")
        return self.evaluate_loss(ctx, CROSS_ENTROPY)

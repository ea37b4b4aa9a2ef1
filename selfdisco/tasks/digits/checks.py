"""The screening checks of a classification loss fn(logits, targets), run inside the sandbox.

On random (B, C) logits the loss must return a finite float tensor of shape (B,) (or a scalar),
leave its inputs alone, repeat itself, stay finite on large logits, send finite non-zero
gradients to the logits, and depend on the labels. Label leakage is the way such a loss can
look fine yet teach nothing: a loss that writes the labels into the prediction (say
CE(logits + 20 * one_hot(targets))) is near its minimum whatever the network predicts. Three
checks catch it, each a property every loss that teaches classification has:
- it ranks predictions: lower for a confidently right prediction than a confidently wrong one;
- an uninformed prediction (equal logits) is clearly worse than the best right one: at least
  UNINFORMED_GAP of the way from the lowest loss over right predictions (the true class ahead
  by 0 to 10) to a confidently wrong one's (cross-entropy: 0.29; label smoothing 0.3: 0.2;
  CE(logits + m * one_hot) falls below 0.05 from about m = 4, label smoothing 0.9 too);
- its descent direction teaches: a small step along -grad raises the true class's
  log-probability for most examples of a random batch.
A passing candidate gets a fingerprint (its logit gradients, compared up to a positive factor,
as for preference losses) and a shape (loss and slope against the true class's margin).
"""

from __future__ import annotations

import torch

from selfdisco.formatting import format_rate
from selfdisco.losses import fingerprint as fp
from selfdisco.rundir.shape import LossShape
from selfdisco.tasks.base import EvaluationError
from selfdisco.tasks.digits.task import compile_classification_loss

BATCH, CLASSES = 16, 10
MARGINS = tuple(m / 2 for m in range(-20, 21))  # the true class's logit minus the others'
UNINFORMED_GAP = 0.05
TEACH_SHARE = 0.75  # share of examples whose true class a descent step must raise
STEP = 1e-2  # the descent step, per example, on gradients scaled to unit norm
MAX_MESSAGE = 240


class Rejected(Exception):
    """A failed check; str(err) is the one-line reason."""


def run_checks(code: str, beta: float = 0.0) -> dict:
    """Screen classification-loss code; {"ok", "reason", "fingerprint", "shape"}, never raises.

    beta is unused (the preference checks' signature, so the sandbox calls both alike).
    """
    try:
        try:
            loss_fn = compile_classification_loss(code)
        except EvaluationError as err:
            raise Rejected(str(err)) from None
        check_behaviour(loss_fn)
        fingerprint, shape = compute_fingerprint(loss_fn), compute_shape(loss_fn)
    except Rejected as err:
        return {"ok": False, "reason": str(err)[:MAX_MESSAGE], "fingerprint": None,
                "shape": None}
    except MemoryError:
        return {"ok": False, "reason": "ran out of memory: the sandbox's memory limit was reached",
                "fingerprint": None, "shape": None}
    return {"ok": True, "reason": None, "fingerprint": fingerprint.to_dict(),
            "shape": shape.to_dict()}


def random_batch(seed: int, scale: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(BATCH, CLASSES, generator=generator)
    targets = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    return logits, targets


def losses_of(loss_fn, logits: torch.Tensor, targets: torch.Tensor, what: str = ""
              ) -> torch.Tensor:
    """Per-example losses (a scalar is spread over the batch), checked for type and shape."""
    try:
        out = loss_fn(logits, targets)
    except Exception as err:  # noqa: BLE001 - any error in candidate code is the candidate's
        raise Rejected(f"the loss raised {type(err).__name__}{what}: {err}") from None
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        raise Rejected(f"the loss must return a float tensor, not {type(out).__name__}")
    if out.dim() == 0:
        return out.expand(logits.shape[0])
    if tuple(out.shape) != (logits.shape[0],):
        raise Rejected(f"the loss returned shape {tuple(out.shape)}{what}; expected "
                       f"({logits.shape[0]},), one loss per example")
    return out


def _gradient(loss_fn, logits: torch.Tensor, targets: torch.Tensor) -> tuple:
    logits = logits.detach().clone().requires_grad_()
    out = losses_of(loss_fn, logits, targets)
    if not out.requires_grad:
        raise Rejected("the loss does not depend on the logits (no gradient)")
    try:
        out.mean().backward()
    except RuntimeError as err:
        raise Rejected(f"backward failed: {err}") from None
    return out.detach(), logits.grad


def check_behaviour(loss_fn) -> None:
    """Raise Rejected with the first check the loss fails (see the module docstring)."""
    logits, targets = random_batch(0)
    kept = (logits.clone(), targets.clone())
    out, grad = _gradient(loss_fn, logits, targets)
    if not torch.equal(logits, kept[0]) or not torch.equal(targets, kept[1]):
        raise Rejected("the loss changed its inputs in place; compute on copies")
    if not torch.isfinite(out).all():
        raise Rejected("the loss is not finite on ordinary logits")
    if grad is None or not torch.isfinite(grad).all():
        raise Rejected("the gradient with respect to the logits is not finite")
    if not grad.abs().sum() > 0:
        raise Rejected("the gradient with respect to the logits is zero")
    again = losses_of(loss_fn, logits, targets).detach()
    if not torch.equal(out, again):
        raise Rejected("the loss gives different values for the same inputs")
    big, _ = _gradient(loss_fn, 15 * logits, targets)
    if not torch.isfinite(big).all():
        raise Rejected("the loss is not finite on large logits (scale 30); use log_softmax or "
                       "logsumexp rather than exp and log")
    other = (targets + 1 + torch.arange(BATCH) % (CLASSES - 1)) % CLASSES
    if torch.equal(losses_of(loss_fn, logits, other).detach(), out):
        raise Rejected("the loss does not depend on the labels (targets)")
    _check_teaches(loss_fn, logits, targets, grad)


def _check_teaches(loss_fn, logits: torch.Tensor, targets: torch.Tensor,
                   grad: torch.Tensor) -> None:
    wrong = (targets + 1) % CLASSES
    one_hot = torch.nn.functional.one_hot(targets, CLASSES).float()
    right_loss = losses_of(loss_fn, 8 * one_hot, targets).detach()
    wrong_loss = losses_of(loss_fn, 8 * torch.nn.functional.one_hot(wrong, CLASSES).float(),
                           targets).detach()
    if not (right_loss < wrong_loss).all():
        raise Rejected("the loss is not lower for a confidently right prediction than for a "
                       "confidently wrong one: it does not rank predictions (does it read the "
                       "labels into the prediction?)")
    uninformed = losses_of(loss_fn, torch.zeros_like(logits), targets).detach()
    best = torch.stack([losses_of(loss_fn, m * one_hot, targets).detach()
                        for m in range(11)]).min(dim=0).values
    gap = float((uninformed - best).mean() / (wrong_loss - best).mean())
    if gap < UNINFORMED_GAP:
        raise Rejected(f"equal logits (an uninformed prediction) already score almost as well "
                       f"as the best right ones ({gap:.3f} of the way to wrong ones, at least "
                       f"{UNINFORMED_GAP} needed): the loss reads the labels into the prediction")
    norms = grad.norm(dim=1, keepdim=True).clamp_min(1e-30)
    stepped = logits - STEP * grad / norms
    before = torch.log_softmax(logits, dim=1).gather(1, targets[:, None])
    after = torch.log_softmax(stepped, dim=1).gather(1, targets[:, None])
    share = float((after > before).float().mean())
    if share < TEACH_SHARE:
        raise Rejected(f"a gradient step on the logits raises the true class's probability for "
                       f"only {format_rate(share)} of examples (at least "
                       f"{format_rate(TEACH_SHARE)} needed): "
                       "minimising this loss does not teach the labels")


def compute_fingerprint(loss_fn) -> fp.Fingerprint:
    """The logit gradients on a fixed batch and along the margin grid (one group, "cls")."""
    logits, targets = random_batch(fp.BATCH_SEED)
    _, batch_grad = _gradient(loss_fn, logits, targets)
    _, margin_grad = _gradient(loss_fn, *_margin_batch())
    blocks = (("cls/batch/logits", tuple(float(x) for x in batch_grad.flatten())),
              ("cls/margin/logits", tuple(float(x) for x in margin_grad.flatten())))
    return fp.Fingerprint.from_dict({"version": fp.VERSION, "blocks": dict(blocks)})


def compute_shape(loss_fn) -> LossShape:
    """Loss and slope against the true class's margin (x axis: MARGINS; beta is unused, 0)."""
    logits, targets = _margin_batch()
    margins = logits[:, 0].clone().requires_grad_()
    full = torch.cat([margins[:, None], logits[:, 1:]], dim=1)
    out = losses_of(loss_fn, full, targets)
    slope, = torch.autograd.grad(out.sum(), margins)
    return LossShape.from_dict({"beta": 0.0, "rho": list(MARGINS),
                                "loss": [float(x) for x in out.detach()],
                                "slope": [float(x) for x in slope]})


def _margin_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0 true, its logit at each margin of MARGINS, every other logit 0."""
    logits = torch.zeros(len(MARGINS), CLASSES)
    logits[:, 0] = torch.tensor(MARGINS)
    return logits, torch.zeros(len(MARGINS), dtype=torch.long)

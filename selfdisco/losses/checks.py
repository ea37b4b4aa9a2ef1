"""The behavioural checks a candidate must pass, run inside the sandbox (imports torch).

On random (B,) inputs with gradients the loss must return a finite floating tensor of shape (B,);
backward must run; both policy inputs must receive finite, non-zero gradients; the output must
change when the inputs change and repeat when they repeat. A passing candidate also gets its
behavioural fingerprint and its loss shape at the run's beta (both on the rho grid of shape.py).
"""

from __future__ import annotations

import traceback

import torch

from selfdisco.losses import fingerprint as fp
from selfdisco.losses.compiler import CompiledLoss, compile_loss
from selfdisco.losses.static import CodeRejected
from selfdisco.rundir.shape import GRID, LossShape, grid_logps

INPUT_NAMES = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
               "reference_rejected_logps")
SCREEN_BATCH = 16
SCREEN_BETA = 0.05
MAX_MESSAGE = 240


class Rejected(Exception):
    """A failed check; str(err) is the one-line reason."""


def run_checks(code: str, beta: float = SCREEN_BETA) -> dict:
    """Screen `code`; returns {"ok", "reason", "fingerprint", "shape"} and never raises.

    Args:
        code: the candidate's code.
        beta: the beta its loss shape is computed at (the run's).
    """
    try:
        loss_fn = _compile(code)
        _check_behaviour(loss_fn)
        fingerprint = compute_fingerprint(loss_fn)
        shape = compute_shape(loss_fn, beta)
    except Rejected as err:
        return {"ok": False, "reason": str(err), "fingerprint": None, "shape": None}
    except MemoryError:
        return {"ok": False, "reason": "ran out of memory: the sandbox's memory limit was reached",
                "fingerprint": None, "shape": None}
    return {"ok": True, "reason": None, "fingerprint": fingerprint.to_dict(),
            "shape": shape.to_dict()}


def random_inputs(seed: int, batch: int = SCREEN_BATCH) -> list[torch.Tensor]:
    """Realistic sequence log-probs: references around -60, policies close to them."""
    generator = torch.Generator().manual_seed(seed)
    ref_chosen = -60 + 15 * torch.randn(batch, generator=generator)
    ref_rejected = -60 + 15 * torch.randn(batch, generator=generator)
    policy_chosen = ref_chosen + 3 * torch.randn(batch, generator=generator)
    policy_rejected = ref_rejected + 3 * torch.randn(batch, generator=generator)
    return [t.requires_grad_() for t in (policy_chosen, policy_rejected, ref_chosen,
                                         ref_rejected)]


def _compile(code: str) -> CompiledLoss:
    try:
        return compile_loss(code)
    except CodeRejected as err:
        raise Rejected(str(err)) from None
    except BaseException as err:  # noqa: BLE001 - the top level of the code itself failed
        raise Rejected(f"running the code's top level raised {describe(err)}") from None


def _call(loss_fn: CompiledLoss, inputs: list[torch.Tensor], beta: float, what: str):
    try:
        return loss_fn(*inputs, beta)
    except MemoryError:
        raise
    except BaseException as err:  # noqa: BLE001 - any failure of candidate code is a verdict
        raise Rejected(f"calling the loss{what} raised {describe(err)}") from None


def _check_output(out, batch: int, what: str = "") -> None:
    if not isinstance(out, torch.Tensor):
        raise Rejected(f"the loss{what} returned a {type(out).__name__}, not a tensor of "
                       f"per-example losses of shape (B,)")
    if out.dim() == 0:
        raise Rejected(f"the loss{what} returned a scalar; return per-example losses of shape "
                       f"(B,) (no .mean() or .sum() at the end)")
    if tuple(out.shape) != (batch,):
        raise Rejected(f"the loss{what} returned shape {tuple(out.shape)}; for inputs of shape "
                       f"({batch},) it must return shape ({batch},)")
    if not out.is_floating_point():
        raise Rejected(f"the loss{what} returned {out.dtype}; it must return floating-point "
                       "losses")
    if not bool(torch.isfinite(out).all()):
        raise Rejected(f"the loss{what} returned NaN or inf for ordinary inputs (rho within "
                       "about +-20); guard logs, divisions and exponentials")


def _check_behaviour(loss_fn: CompiledLoss) -> None:
    inputs = random_inputs(0)
    out = _call(loss_fn, inputs, SCREEN_BETA, "")
    _check_output(out, SCREEN_BATCH)
    if not out.requires_grad:
        raise Rejected("the output does not depend on the inputs through differentiable "
                       "operations (detached, or built from comparisons only)")
    try:
        out.mean().backward()
    except BaseException as err:  # noqa: BLE001
        raise Rejected(f"backward through loss.mean() raised {describe(err)}") from None
    for index, tensor in enumerate(inputs):
        name, grad = INPUT_NAMES[index], tensor.grad
        policy = index < 2
        if grad is None:
            if policy:
                raise Rejected(f"{name} receives no gradient; the loss must depend on it "
                               "differentiably (do not detach it)")
            continue
        if not bool(torch.isfinite(grad).all()):
            raise Rejected(f"the gradient with respect to {name} contains NaN or inf")
        if policy and not bool((grad != 0).any()):
            raise Rejected(f"the gradient with respect to {name} is zero for every example; "
                           "the loss must train the policy")
    again = _call(loss_fn, [t.detach().clone().requires_grad_() for t in inputs], SCREEN_BETA,
                  " a second time")
    if not (isinstance(again, torch.Tensor) and again.shape == out.shape
            and torch.allclose(again, out, rtol=1e-6, atol=1e-9)):
        raise Rejected("the loss is not deterministic: the same inputs gave different outputs "
                       "(no randomness or state kept between calls)")
    other = _call(loss_fn, random_inputs(1), SCREEN_BETA, " on a second batch")
    _check_output(other, SCREEN_BATCH, " on a second batch")
    if torch.allclose(other, out, rtol=1e-6, atol=1e-9):
        raise Rejected("the loss is constant: different inputs gave the same outputs")


def compute_fingerprint(loss_fn: CompiledLoss) -> fp.Fingerprint:
    """The policy gradients on the rho grid and the fixed batch, at each fingerprint beta (the
    loss values and the reference gradients play no part in training). All of the grid is
    kept; a run compares it within the rho its training reached, the batch whole
    (Fingerprint.restricted)."""
    blocks = {}
    for beta in fp.BETAS:
        _, grid = _values(loss_fn, _grid(), beta, " on the rho grid")
        _, batch = _values(loss_fn, random_inputs(fp.BATCH_SEED, fp.BATCH_SIZE), beta,
                           " on the fingerprint batch")
        for where, grads in (("grid", grid), ("batch", batch)):
            blocks[f"beta={beta}/{where}/chosen"] = grads[0]
            blocks[f"beta={beta}/{where}/rejected"] = grads[1]
    return fp.Fingerprint.from_dict({"version": fp.VERSION, "blocks": blocks})


def compute_shape(loss_fn: CompiledLoss, beta: float) -> LossShape:
    """Loss and d loss / d rho on the rho grid at `beta` (moving along the grid changes the
    policy's chosen log-prob by +1/2 and its rejected one by -1/2 per unit of rho)."""
    out, grads = _values(loss_fn, _grid(), beta, f" on the rho grid at beta {beta:g}")
    slope = [(chosen - rejected) / 2 for chosen, rejected in zip(grads[0], grads[1], strict=True)]
    return LossShape.from_dict({"beta": beta, "rho": GRID, "loss": out, "slope": slope})


def _grid() -> list[torch.Tensor]:
    return [torch.tensor(values) for values in grid_logps()]


def _values(loss_fn: CompiledLoss, inputs: list[torch.Tensor], beta: float,
            what: str) -> tuple[list[float], list[list[float]]]:
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = _call(loss_fn, inputs, beta, what)
    _check_shape_only(out, inputs[0].shape[0], what)
    try:
        out.sum().backward()
    except BaseException as err:  # noqa: BLE001
        raise Rejected(f"backward{what} raised {describe(err)}") from None
    grads = [(t.grad if t.grad is not None else torch.zeros_like(t)).tolist() for t in inputs]
    return out.detach().tolist(), grads


def _check_shape_only(out, batch: int, what: str) -> None:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch,):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise Rejected(f"the loss{what} returned {shape} for a batch of {batch}; it must work "
                       "for any batch size")
    if not out.requires_grad:
        raise Rejected(f"the output{what} does not depend differentiably on the inputs")


OUT_OF_MEMORY_SIGNS = ("can't allocate memory", "std::bad_alloc", "DefaultCPUAllocator")


def describe(err: BaseException) -> str:
    """`Type: message (line N)` on one line, the line taken from the candidate's own code."""
    message = " ".join(str(err).split())
    if isinstance(err, MemoryError) or any(sign in message for sign in OUT_OF_MEMORY_SIGNS):
        return "out of memory: the sandbox's memory limit was reached"
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    line = None
    for frame in traceback.extract_tb(err.__traceback__):
        if frame.filename == "<candidate>":
            line = frame.lineno
    where = f" (line {line})" if line else ""
    return f"{type(err).__name__}: {message}{where}" if message else f"{type(err).__name__}{where}"

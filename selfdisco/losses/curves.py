"""Loss curves: `loss_curve` evaluates a loss at given rho values in a confined sandbox child
(losses/sandbox.py), for `selfdisco losses eval` (its file may hold a run's candidate);
`plot_shapes` draws shapes that screening recorded (shape.py), for `selfdisco losses plot` and
the report, and runs no loss code.

In `loss_curve` rho is applied as the chosen-minus-rejected log-ratio with zero reference:
policy_chosen_logps = rho, policy_rejected_logps = 0, both reference log-probs 0. All rho values
form one batch, so losses with batch statistics see the whole grid as their batch.
"""

from __future__ import annotations

from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.losses.candidate import Candidate
from selfdisco.losses.compiler import compile_loss
from selfdisco.losses.sandbox import Sandbox
from selfdisco.losses.static import CodeRejected, check_code
from selfdisco.rundir.shape import LossShape

CURVE_ENTRIES = {"curve": "selfdisco.losses.curves:curve_values"}
CURVE_TIMEOUT_S = 30.0
CURVE_MEMORY_MB = 2048


def loss_curve(candidate: Candidate, rho: list[float], beta: float) -> tuple[list, list]:
    """Per-example losses at each rho and d(sum of losses)/d rho, in float64; UserError saying
    why when the code is refused or fails."""
    try:
        check_code(candidate.code)
    except CodeRejected as err:
        raise UserError(f"{candidate.name} is not a valid loss: {err}") from None
    with Sandbox(CURVE_ENTRIES) as sandbox:
        result = sandbox.call("curve", {"code": candidate.code, "rho": list(rho), "beta": beta},
                              timeout_s=CURVE_TIMEOUT_S, memory_mb=CURVE_MEMORY_MB)
    if not result.get("ok"):
        raise UserError(f"{candidate.name} failed: {result.get('reason')}")
    return result["loss"], result["slope"]


def curve_values(code: str, rho: list[float], beta: float) -> dict:
    """loss_curve's work, in the sandbox child: {"ok", "loss", "slope"} or {"ok", "reason"}."""
    # lazy: loads torch
    import torch

    # lazy: loads torch, numpy
    from selfdisco.losses.checks import describe

    try:
        loss_fn = compile_loss(code)
        chosen = torch.tensor(rho, dtype=torch.float64, requires_grad=True)
        zeros = [torch.zeros_like(chosen) for _ in range(3)]
        losses = loss_fn(chosen, *zeros, beta)
        losses.sum().backward()
    except Exception as err:  # noqa: BLE001 - the code failed: say how
        return {"ok": False, "reason": describe(err)}
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (len(rho),):
        return {"ok": False, "reason": f"it did not return per-example losses of shape "
                                       f"({len(rho)},)"}
    grad = chosen.grad if chosen.grad is not None else torch.zeros_like(chosen)
    return {"ok": True, "loss": losses.detach().tolist(), "slope": grad.tolist()}


def plot_shapes(shapes: list[tuple[str, LossShape]], output: Path) -> None:
    """Two panels, loss and slope against rho, one curve per named recorded shape (as the
    paper's Fig. 6)."""
    # lazy: loads matplotlib
    import matplotlib

    matplotlib.use("Agg")
    # lazy: loads matplotlib
    import matplotlib.pyplot as plt

    betas = {shape.beta for _, shape in shapes}
    figure, (loss_axis, slope_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, shape in shapes:
        label = name if len(betas) == 1 else f"{name}, beta {shape.beta:g}"
        loss_axis.plot(shape.rho, _gaps(shape.loss), label=label)
        slope_axis.plot(shape.rho, _gaps(shape.slope), label=label)
    at = f", beta = {betas.pop():g}" if len(betas) == 1 else ""
    for axis, title in ((loss_axis, "loss f(rho)"), (slope_axis, "slope df/drho")):
        axis.set_title(title + at)
        axis.set_xlabel("rho (chosen minus rejected log-ratio)")
        axis.axhline(0, color="grey", linewidth=0.5)
        axis.axvline(0, color="grey", linewidth=0.5)
        axis.legend(fontsize="small")
    figure.tight_layout()
    try:
        figure.savefig(output, dpi=120)
    except OSError as err:
        raise UserError(f"cannot write {output}: {err}") from None
    finally:
        plt.close(figure)


def _gaps(values: tuple[float | None, ...]) -> list[float]:
    """Values for matplotlib: a missing (non-finite) one leaves a gap."""
    return [float("nan") if value is None else value for value in values]

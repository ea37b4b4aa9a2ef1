"""Loss and gradient as functions of rho, for `selfdisco losses eval` and `plot` (imports torch).

rho is applied as the chosen-minus-rejected log-ratio with zero reference: policy_chosen_logps =
rho, policy_rejected_logps = 0, both reference log-probs 0. All rho values form one batch, so
losses with batch statistics see the whole grid as their batch.
"""

from __future__ import annotations

from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.losses.candidate import Candidate
from selfdisco.losses.compiler import compile_loss
from selfdisco.losses.static import CodeRejected


def loss_curve(candidate: Candidate, rho: list[float], beta: float) -> tuple[list, list]:
    """Per-example losses at each rho and d(sum of losses)/d rho, in float64."""
    import torch

    from selfdisco.losses.checks import describe

    try:
        loss_fn = compile_loss(candidate.code)
    except CodeRejected as err:
        raise UserError(f"{candidate.name} is not a valid loss: {err}") from None
    chosen = torch.tensor(rho, dtype=torch.float64, requires_grad=True)
    zeros = [torch.zeros_like(chosen) for _ in range(3)]
    try:
        losses = loss_fn(chosen, *zeros, beta)
        losses.sum().backward()
    except Exception as err:  # noqa: BLE001 - the user's code failed: say how
        raise UserError(f"{candidate.name} failed: {describe(err)}") from None
    if not isinstance(losses, torch.Tensor) or tuple(losses.shape) != (len(rho),):
        raise UserError(f"{candidate.name} did not return per-example losses of shape "
                        f"({len(rho)},)")
    grad = chosen.grad if chosen.grad is not None else torch.zeros_like(chosen)
    return losses.detach().tolist(), grad.tolist()


def plot_curves(candidates: list[Candidate], beta: float, rho_range: tuple[float, float],
                output: Path, points: int = 401) -> None:
    """Two panels, loss and gradient against rho, one curve per loss (as the paper's Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, high = rho_range
    rho = [low + (high - low) * i / (points - 1) for i in range(points)]
    figure, (loss_axis, grad_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    for candidate in candidates:
        losses, grads = loss_curve(candidate, rho, beta)
        loss_axis.plot(rho, losses, label=candidate.name)
        grad_axis.plot(rho, grads, label=candidate.name)
    for axis, title in ((loss_axis, "loss f(rho)"), (grad_axis, "gradient df/drho")):
        axis.set_title(f"{title}, beta = {beta:g}")
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

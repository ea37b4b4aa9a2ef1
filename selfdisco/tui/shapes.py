"""A candidate loss's shape: its value against rho, beside dpo's (as in the paper's Figure 6).

rho is applied as the chosen-minus-rejected log-ratio with a zero reference, over the same range
as `selfdisco losses plot`. Computed by selfdisco.losses.curves (torch); every failure becomes a
ShapeUnavailable with a one-line message for the UI. Call it off the UI thread: the first call
imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfdisco.errors import UserError

RHO_MIN, RHO_MAX, RHO_POINTS = -10.0, 10.0, 81
DEFAULT_BETA = 0.05  # the paper's beta during discovery


class ShapeUnavailable(Exception):
    """The shape cannot be computed; the message says why."""


@dataclass(frozen=True)
class LossShape:
    rho: list[float]
    loss: list[float]  # the candidate's
    dpo: list[float]
    beta: float


def rho_grid(points: int = RHO_POINTS) -> list[float]:
    step = (RHO_MAX - RHO_MIN) / (points - 1)
    return [round(RHO_MIN + i * step, 6) for i in range(points)]


def loss_values(name: str, code: str, rho: list[float], beta: float) -> list[float]:
    """The per-example loss of `code` at each rho (policy chosen = rho, everything else 0)."""
    try:
        from selfdisco.losses.candidate import Candidate
        from selfdisco.losses.curves import loss_curve
    except ImportError as err:
        raise ShapeUnavailable(f"loss shapes need selfdisco.losses and torch ({err})") from err
    if not code.strip():
        raise ShapeUnavailable("no loss: this row is the untrained policy")
    try:
        losses, _ = loss_curve(Candidate(thought="", name=name, code=code), rho, beta)
    except UserError as err:
        raise ShapeUnavailable(f"no loss shape: {err}") from err
    except Exception as err:  # noqa: BLE001 - candidate code can fail in any way
        raise ShapeUnavailable(f"no loss shape: {type(err).__name__}: {err}") from err
    return [float(value) for value in losses]


def dpo_code() -> str:
    try:
        from selfdisco.losses import catalog
    except ImportError as err:
        raise ShapeUnavailable(f"loss shapes need selfdisco.losses ({err})") from err
    return catalog.get("dpo").candidate.code


def loss_shape(name: str, code: str, beta: float = DEFAULT_BETA) -> LossShape:
    """The candidate's loss and dpo's on the same rho grid."""
    rho = rho_grid()
    return LossShape(rho=rho, loss=loss_values(name, code, rho, beta),
                     dpo=loss_values("dpo", dpo_code(), rho, beta), beta=beta)

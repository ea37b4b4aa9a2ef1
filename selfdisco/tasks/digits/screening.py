"""Classification losses as discovery candidates (the digits task): the catalog of baselines
and the screening (the loss library's static check, then the behavioural checks of
checks.py in the sandbox). Light imports only: the orchestrator does not import torch."""

from __future__ import annotations

from selfdisco.errors import UserError
from selfdisco.losses import screening as losses_screening
from selfdisco.losses.candidate import Candidate
from selfdisco.losses.screening import DEFAULT_MEMORY_MB, ScreenResult

REFERENCE = "cross_entropy"  # the baseline every classification candidate is compared with

CATALOG: dict[str, tuple[str, str]] = {
    "cross_entropy": ("Cross-entropy", '''
def cross_entropy(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none")
'''),
    "label_smoothing": ("Label smoothing (0.1; Szegedy et al., 2016)", '''
def label_smoothing(logits, targets):
    return F.cross_entropy(logits, targets, reduction="none", label_smoothing=0.1)
'''),
    "focal": ("Focal loss (gamma 2; Lin et al., 2017)", '''
def focal(logits, targets):
    logp = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    return -((1 - logp.exp()) ** 2) * logp
'''),
}


def catalog_entry(name: str) -> dict:
    """A baseline as the loop's burn-in needs it: name, full name, code."""
    if name not in CATALOG:
        raise UserError(f"burn-in loss {name!r} is not a classification baseline; choose from "
                        f"{', '.join(CATALOG)}")
    full_name, code = CATALOG[name]
    return {"name": name, "full_name": full_name, "code": code.strip() + "\n"}


def screen(candidate: Candidate, *, timeout_s: float = 5.0, beta: float = 0.0,
           memory_mb: int = DEFAULT_MEMORY_MB, sandbox=None) -> ScreenResult:
    """Check a classification loss statically, then run its checks in the sandbox (the
    loss library's screening with the classification kind, so the loop treats both alike)."""
    return losses_screening.screen(candidate, timeout_s=timeout_s, memory_mb=memory_mb,
                                   sandbox=sandbox, beta=beta, kind="classification")

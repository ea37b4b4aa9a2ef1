"""Classification losses as discovery candidates (the digits task): the catalog of baselines
and the screening (static check here, behavioural checks in the sandbox:
checks.py). Light imports only: the orchestrator does not import torch."""

from __future__ import annotations

import time

from selfdisco.errors import UserError
from selfdisco.losses.candidate import Candidate
from selfdisco.losses.fingerprint import Fingerprint
from selfdisco.losses.screening import DEFAULT_MEMORY_MB, ScreenResult, default_sandbox
from selfdisco.rundir.shape import LossShape
from selfdisco.tasks.base import EvaluationError
from selfdisco.tasks.digits.task import static_check

REFERENCE = "cross_entropy"  # the baseline every classification candidate is compared with
CHECKS = "classification"  # the sandbox's name for classification_checks

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
    """Check a classification loss statically, then run its checks in the sandbox (the same
    result type as the preference screening, so the loop treats both alike)."""
    started = time.perf_counter()
    try:
        static_check(candidate.code)
    except EvaluationError as err:
        return ScreenResult(False, str(err), None, time.perf_counter() - started)
    raw = (sandbox or default_sandbox()).run(candidate.code, timeout_s=timeout_s,
                                            memory_mb=memory_mb, beta=beta, checks=CHECKS)
    fingerprint = Fingerprint.from_dict(raw["fingerprint"]) if raw.get("fingerprint") else None
    shape = LossShape.from_dict(raw["shape"]) if raw.get("shape") else None
    ok = bool(raw.get("ok")) and fingerprint is not None and shape is not None
    reason = None if ok else (raw.get("reason") or "rejected without a reason")
    return ScreenResult(ok, reason, fingerprint, time.perf_counter() - started, shape)

"""Screening: is a candidate safe and sane enough to spend training time on?

`screen` runs the static check here (fast, no torch), then the behavioural checks in the
sandbox. Every rejection carries a one-line reason meant to be sent back to the LLM. A passing
candidate comes back with its fingerprint and its loss shape at the given beta, computed in the
sandbox, so no caller ever runs candidate code itself.
"""

from __future__ import annotations

import atexit
import threading
import time
from dataclasses import dataclass, replace

from selfdisco.losses.candidate import Candidate
from selfdisco.losses.fingerprint import Fingerprint
from selfdisco.losses.parse import ParseError, parse_candidate
from selfdisco.losses.sandbox import Sandbox
from selfdisco.losses.static import CodeRejected, check_code
from selfdisco.rundir.shape import LossShape

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
DEFAULT_BETA = 0.05  # the paper's beta during discovery

_default: Sandbox | None = None
_default_lock = threading.Lock()


@dataclass(frozen=True)
class ScreenResult:
    ok: bool
    reason: str | None  # one line, for the LLM; None when ok
    fingerprint: Fingerprint | None
    seconds: float  # wall time of the whole screening
    shape: LossShape | None = None  # loss and slope on the rho grid; None unless ok

    def to_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "seconds": round(self.seconds, 4),
                "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None,
                "shape": self.shape.to_dict() if self.shape else None}


def default_sandbox() -> Sandbox:
    """The process-wide sandbox, started on first use and stopped at exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Sandbox()
            atexit.register(_default.close)
        return _default


def prewarm() -> None:
    """Start the default sandbox now, so the first screening does not wait for `import torch`."""
    default_sandbox().start()


def screen(candidate: Candidate, *, timeout_s: float = DEFAULT_TIMEOUT_S,
           memory_mb: int = DEFAULT_MEMORY_MB, sandbox: Sandbox | None = None,
           beta: float = DEFAULT_BETA, kind: str = "preference") -> ScreenResult:
    """Check a candidate statically, then run its kind's behavioural checks in the sandbox.

    Args:
        candidate: the proposal; only its code is run.
        timeout_s: wall-clock limit for the child process.
        memory_mb: address space the child may add on top of the sandbox's own.
        sandbox: a specific sandbox; the process-wide one by default.
        beta: the beta the loss shape is computed at (a run's training beta).
        kind: the kind of loss (kinds.KINDS): its signature and its checks.
    """
    started = time.perf_counter()
    try:
        check_code(candidate.code, kind)
    except CodeRejected as err:
        return ScreenResult(False, str(err), None, time.perf_counter() - started)
    raw = (sandbox or default_sandbox()).run(candidate.code, timeout_s=timeout_s,
                                            memory_mb=memory_mb, beta=beta, checks=kind)
    fingerprint = Fingerprint.from_dict(raw["fingerprint"]) if raw.get("fingerprint") else None
    shape = LossShape.from_dict(raw["shape"]) if raw.get("shape") else None
    ok = bool(raw.get("ok")) and fingerprint is not None and shape is not None
    reason = None if ok else (raw.get("reason") or "rejected without a reason")
    return ScreenResult(ok, reason, fingerprint, time.perf_counter() - started, shape)


def screen_text(text: str, **options) -> tuple[Candidate | None, ScreenResult]:
    """Parse an LLM answer and screen the candidate in it; a parse failure is a rejection."""
    started = time.perf_counter()
    try:
        candidate = parse_candidate(text)
    except ParseError as err:
        return None, ScreenResult(False, str(err), None, time.perf_counter() - started)
    result = screen(candidate, **options)
    return candidate, replace(result, seconds=time.perf_counter() - started)

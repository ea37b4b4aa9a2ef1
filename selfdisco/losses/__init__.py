"""The loss library: candidate format, catalog, parsing, static check, sandboxed screening.

Importing this package does not import torch: compile_loss imports it when called, and
screening runs torch only inside the sandbox.
"""

from __future__ import annotations

from selfdisco.losses.candidate import Candidate
from selfdisco.losses.compiler import CompiledLoss, LossFn, compile_loss
from selfdisco.losses.fingerprint import Fingerprint
from selfdisco.losses.load import load_loss
from selfdisco.losses.parse import ParseError, parse_candidate
from selfdisco.losses.screening import ScreenResult, prewarm, screen, screen_text
from selfdisco.losses.static import CodeRejected, check_code

__all__ = [
    "Candidate", "CodeRejected", "CompiledLoss", "Fingerprint", "LossFn", "ParseError",
    "ScreenResult", "check_code", "compile_loss", "load_loss", "parse_candidate", "prewarm",
    "screen", "screen_text",
]

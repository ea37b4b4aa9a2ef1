"""Numbers and times as selfdisco shows them: the TUI, the printer, the report and the
proposer's prompts all format through here, one rule per quantity.

    fitness, its standard error and differences of fitness   4 decimals     0.4120 ± 0.0310
    KL (nats)                                                3 decimals     0.012 ± 0.003
    rates and shares, as fractions of 1                      2 decimals     0.50 ± 0.18
    numerical errors (log-prob differences)                  scientific     2.10e-05

A standard error that is missing (None) or not finite is left out; a missing value prints as
`missing`. Stored values (archive, events, metrics) are never rounded: only their text is.
"""

from __future__ import annotations

import json
import math
from typing import Any

FITNESS_DECIMALS = 4
KL_DECIMALS = 3
RATE_DECIMALS = 2
ERROR_DIGITS = 2  # decimals of the mantissa


def format_duration(seconds: float | None) -> str:
    """12s, 4m05s, 1h02m."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _plus_minus(text: str, stderr: float | None, digits: int) -> str:
    """`text` ± the standard error at `digits` decimals; `text` alone without one."""
    return f"{text} ± {stderr:.{digits}f}" if _known(stderr) else text


def format_fitness(value: float | None, stderr: float | None = None, *, signed: bool = False,
                   missing: str = "") -> str:
    """0.4120 ± 0.0310, or 0.4120 without a standard error; signed (+0.0123) for a difference
    of fitnesses; `missing` when there is no value."""
    if value is None:
        return missing
    sign = "+" if signed else ""
    return _plus_minus(f"{value:{sign}.{FITNESS_DECIMALS}f}", stderr, FITNESS_DECIMALS)


def format_stderr(stderr: float | None, missing: str = "-") -> str:
    """A fitness's standard error on its own: 0.0310; `missing` when there is none."""
    return f"{stderr:.{FITNESS_DECIMALS}f}" if _known(stderr) else missing


def format_difference(difference: Any, missing: str = "-") -> str:
    """A difference of fitnesses (a stats.BlockedDifference: mean, stderr, paired): '+0.0123 ±
    0.0040', with a '~' before an unpaired one; `missing` for none."""
    if difference is None:
        return missing
    text = format_fitness(difference.mean, difference.stderr, signed=True)
    return text if difference.paired else "~" + text


def format_kl(value: float | None, stderr: float | None = None, *,
              missing: str = "-") -> str:
    """A KL in nats: 0.012 ± 0.003, or 0.012; `missing` when there is no value."""
    if value is None:
        return missing
    return _plus_minus(f"{value:.{KL_DECIMALS}f}", stderr, KL_DECIMALS)


def format_rate(value: float | None, stderr: float | None = None, *, signed: bool = False,
                missing: str = "-") -> str:
    """A rate or share as a fraction of 1 (not a percentage): 0.50 ± 0.18, or 0.50; signed
    (+0.25) for a difference of rates; `missing` when there is no value or it is not a number
    (a rate of nothing)."""
    if not _known(value):
        return missing
    sign = "+" if signed else ""
    return _plus_minus(f"{value:{sign}.{RATE_DECIMALS}f}", stderr, RATE_DECIMALS)


def format_error(value: float | None, missing: str = "-") -> str:
    """A small numerical error in scientific form, 2.10e-05 (fixed decimals would show
    0.0000); `missing` when there is none."""
    return missing if value is None else f"{value:.{ERROR_DIGITS}e}"


def format_offset(t: float, start: float | None) -> str:
    """A log time as the offset from the run's start, +HH:MM:SS (stable across time zones)."""
    offset = max(0, int(t - (start if start is not None else t)))
    hours, rest = divmod(offset, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"+{hours:02d}:{minutes:02d}:{seconds:02d}"


def json_text(value: object) -> str:
    """`value` as strict, indented JSON: NaN and infinities become null, other objects (paths)
    their str(). Every command's --json output goes through here."""
    def strict(item: object) -> object:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {str(k): strict(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [strict(v) for v in item]
        return item

    return json.dumps(strict(value), indent=2, default=str, allow_nan=False)


def print_json(value: object) -> None:
    """Print `value` as strict JSON (json_text) on stdout."""
    print(json_text(value), flush=True)

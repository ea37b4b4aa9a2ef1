"""Numbers and times as selfdisco shows them: the TUI, the printer, the report and the
proposer's prompts all format through here."""

from __future__ import annotations

import json
import math


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


def format_number(value: float | None, digits: int = 4, missing: str = "-") -> str:
    """0.4120 (`digits` decimals); `missing` when there is no value."""
    return missing if value is None else f"{value:.{digits}f}"


def format_fitness(value: float | None, stderr: float | None = None, *,
                   missing: str = "") -> str:
    """0.4120 ± 0.0310, or 0.4120 without a standard error; `missing` when there is no value."""
    if value is None:
        return missing
    if stderr is None:
        return format_number(value)
    return f"{format_number(value)} ± {format_number(stderr)}"


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

"""Numbers and times as the TUI shows them; plain functions, reusable by text output."""

from __future__ import annotations


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


def format_fitness(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return ""
    if stderr is None:
        return f"{value:.4f}"
    return f"{value:.4f} ± {stderr:.4f}"


def format_offset(t: float, start: float | None) -> str:
    """A log time as the offset from the run's start, +HH:MM:SS (stable across time zones)."""
    offset = max(0, int(t - (start if start is not None else t)))
    hours, rest = divmod(offset, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"+{hours:02d}:{minutes:02d}:{seconds:02d}"

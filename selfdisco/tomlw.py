"""A small TOML writer for the resolved config (tomllib only reads)."""

from __future__ import annotations

import json
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(data: dict[str, Any], _prefix: str = "") -> str:
    """Tables of scalars and lists; None values are left out (TOML has no null)."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items()
             if v is not None and not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{_prefix}{key}"
            body = dumps(value, f"{name}.")
            lines.append(f"\n[{name}]\n{body}".rstrip("\n"))
    return "\n".join(lines).lstrip("\n") + "\n"

"""Reading the bits of a run's config.toml that the TUI shows."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.toml"


def read_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config.toml, or {} when it is missing or unreadable."""
    try:
        with open(Path(run_dir) / CONFIG_FILE, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def config_value(config: dict[str, Any], key: str) -> Any:
    """The value of `key` at the top level of the config or in any of its tables (first found)."""
    if key in config and not isinstance(config[key], dict):
        return config[key]
    for value in config.values():
        if isinstance(value, dict):
            found = config_value(value, key)
            if found is not None:
                return found
    return None


def header_fields(config: dict[str, Any]) -> tuple[str | None, str | None]:
    """(task, preset) from a config, for the header before the run's first event."""
    task = config.get("task")
    task = task.get("name") if isinstance(task, dict) else task
    preset = config.get("preset")
    return (task if isinstance(task, str) else None, preset if isinstance(preset, str) else None)

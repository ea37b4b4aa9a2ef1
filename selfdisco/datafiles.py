"""One loader for tabular data, local or on the Hugging Face Hub, through `datasets`.

A data setting is one string:
- a local file: path/to/file.jsonl, .json, .csv or .parquet (a .json file may hold a list of
  rows or {"data": [rows]});
- a Hub dataset: ORG/NAME, ORG/NAME:CONFIG or ORG/NAME:CONFIG:SPLIT (ORG/NAME::SPLIT keeps the
  default config). A split named there wins over the caller's default split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfdisco.errors import UserError, one_line

BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class DataSpec:
    """Where a table comes from: a local file, or a Hub dataset with its config and split."""

    source: str
    local: bool
    config: str | None = None
    split: str = "train"

    def label(self) -> str:
        """How messages name it: the path, or dataset 'id' (config c, split s)."""
        if self.local:
            return self.source
        config = f"config {self.config!r}, " if self.config else ""
        return f"dataset {self.source!r} ({config}split {self.split!r})"


def parse_spec(text: str, split: str = "train") -> DataSpec:
    """Read a data setting (see the module docstring); `split` is the default Hub split."""
    text = str(text).strip()
    if not text:
        raise UserError("the data setting is empty; give a .jsonl/.json/.csv/.parquet file or a "
                        "Hugging Face dataset id (ORG/NAME[:CONFIG[:SPLIT]])")
    path = Path(text).expanduser()
    if path.exists() or path.suffix.lower() in BUILDERS or text.startswith((".", "/", "~")):
        return DataSpec(str(path), local=True)
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UserError(f"{text!r} is not a data source: give a local file or a Hugging Face "
                        "dataset id as ORG/NAME, ORG/NAME:CONFIG or ORG/NAME:CONFIG:SPLIT")
    config = parts[1] if len(parts) > 1 and parts[1] else None
    return DataSpec(parts[0], local=False, config=config,
                    split=parts[2] if len(parts) > 2 and parts[2] else split)


def load_table(text: str, *, split: str = "train", what: str = "input") -> tuple[Any, str]:
    """Load a local file or a Hub dataset as a `datasets.Dataset`.

    Args:
        text: the data setting (see the module docstring).
        split: the Hub split used when `text` names none.
        what: what the data is, for messages ("preference", "review").

    Returns:
        (the dataset, the label messages name it by); an empty local file gives an empty one.

    Raises:
        UserError: the file is missing, of an unknown kind or unreadable, or the Hub dataset
            cannot be loaded; the message says which and what to give instead.
    """
    # lazy: loads datasets
    import datasets

    spec = parse_spec(text, split)
    where = spec.label()
    datasets.disable_progress_bars()
    quiet = logging.getLogger("datasets")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its own error lines would repeat ours
    try:
        if spec.local:
            return _load_file(Path(spec.source), what), where
        return datasets.load_dataset(spec.source, spec.config, split=spec.split), where
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any loading failure is the user's to fix
        reason = one_line(err.__cause__ or err)
        if spec.local:
            raise UserError(f"cannot read {where}: {reason}") from None
        raise UserError(f"cannot load the {where} for the {what} data: {reason}. Check the "
                        "id, config and split (ORG/NAME:CONFIG:SPLIT) and the network, or give "
                        "a local .jsonl/.json/.csv/.parquet file") from None
    finally:
        quiet.setLevel(level)


def _load_file(path: Path, what: str) -> Any:
    # lazy: loads datasets
    import datasets

    builder = BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise UserError(f"{path}: {what} data must be a .jsonl, .json, .csv or .parquet file, "
                        "or a Hugging Face dataset id")
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    if path.stat().st_size < 4096 and not path.read_bytes().strip():
        return datasets.Dataset.from_list([])
    table = datasets.load_dataset(builder, data_files=str(path), split="train")
    if path.suffix.lower() == ".json" and table.column_names == ["data"]:
        table = datasets.load_dataset(builder, data_files=str(path), field="data", split="train")
    return table


def require_columns(table: Any, columns: list[str], where: str, hint: str) -> None:
    """UserError naming the missing columns, the ones there are, and `hint` (the setting to
    change, or what the columns must hold)."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(missing)} (its columns: "
                        f"{', '.join(table.column_names) or 'none'}); {hint}")

"""Preference data: prompt / chosen / rejected, from a file, a Python list or a Hugging Face id.

Rows are plain text (strings) or conversational (lists of {"role", "content"} messages). A
conversational set may leave out "prompt" when chosen and rejected share their opening turns
(as argilla/dpo-mix-7k does): TRL splits the shared prefix off as the prompt. Everything is
checked here, before any model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfdisco.datafiles import load_table, require_columns
from selfdisco.errors import UserError

COLUMNS = ("prompt", "chosen", "rejected")


def load_preferences(source: Any, *, split: str = "train"):
    """Load and check preference pairs.

    Args:
        source: a list of dicts, or a data setting (selfdisco.datafiles): a local
            .jsonl/.json/.csv/.parquet file or a Hugging Face dataset id, ORG/NAME[:CONFIG[:SPLIT]].
        split: the split to read from a Hugging Face dataset that names none.

    Returns:
        A `datasets.Dataset` with columns prompt (unless implicit), chosen and rejected.

    Raises:
        UserError: the source cannot be read, is empty, or lacks or mistypes a column.
    """
    # lazy: loads datasets
    from datasets import Dataset

    if isinstance(source, (list, tuple)):
        rows, where = list(source), "the given list"
    elif isinstance(source, (str, Path)):
        rows, where = _read_source(str(source), split)
    else:
        raise UserError(f"preference data must be a file path, a dataset id or a list of dicts, "
                        f"not {type(source).__name__}")
    if not rows:
        raise UserError(f"{where} holds no preference pairs")
    rows = [_check_row(row, i, where) for i, row in enumerate(rows)]
    kinds = {_is_conversational(row) for row in rows}
    if len(kinds) > 1:
        raise UserError(f"{where} mixes plain-text and conversational rows; use one form")
    columns = [c for c in COLUMNS if c in rows[0]]
    if {tuple(c for c in COLUMNS if c in row) for row in rows} != {tuple(columns)}:
        raise UserError(f"{where}: some rows have a 'prompt' and others do not")
    return Dataset.from_list([{c: row[c] for c in columns} for row in rows])


def _read_source(source: str, split: str) -> tuple[list[dict], str]:
    table, where = load_table(source, split=split, what="preference")
    if len(table) == 0:
        return [], where
    conversational = "chosen" in table.column_names and _is_messages(table[0]["chosen"])
    columns = ["chosen", "rejected"] if conversational else list(COLUMNS)
    require_columns(table, columns, where, "give --data (or the task's data option) pairs with "
                    "prompt, chosen and rejected columns")
    return table.to_list(), where


def _check_row(row: Any, index: int, where: str) -> dict:
    if not isinstance(row, dict):
        raise UserError(f"{where}, row {index}: expected an object with prompt/chosen/rejected")
    row = {k: v for k, v in row.items() if v is not None}  # a table's empty cell
    missing = [c for c in ("chosen", "rejected") if c not in row]
    if missing:
        raise UserError(f"{where}, row {index}: missing column(s) {', '.join(missing)} "
                        f"(found: {', '.join(sorted(row)) or 'none'})")
    conversational = _is_conversational(row)
    if "prompt" not in row and not conversational:
        raise UserError(f"{where}, row {index}: missing column 'prompt' (only conversational "
                        "rows may leave it out)")
    row = {c: row[c] for c in COLUMNS if c in row}
    for column, value in row.items():
        if conversational:
            if column == "prompt" and isinstance(value, str):
                value = row[column] = [{"role": "user", "content": value}]
            if not _is_messages(value):
                raise UserError(f"{where}, row {index}: '{column}' must be a list of "
                                "{'role', 'content'} messages like the other columns")
        elif not isinstance(value, str):
            raise UserError(f"{where}, row {index}: '{column}' must be a string")
    return row


def _is_conversational(row: dict) -> bool:
    return _is_messages(row.get("chosen"))


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in value))

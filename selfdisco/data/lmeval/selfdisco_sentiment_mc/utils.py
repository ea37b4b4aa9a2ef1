"""Loads the task's reviews from data.jsonl beside this file (no Hub access)."""

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data.jsonl"


def load(**_kwargs):
    """The reviews as a DatasetDict with one split, "test"."""
    import datasets  # lazy: loads datasets when lm-eval builds the task

    return datasets.DatasetDict(
        {"test": datasets.load_dataset("json", data_files=str(DATA), split="train")})

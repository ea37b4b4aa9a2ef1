"""One loader for local files (JSON, JSONL, CSV, Parquet) and Hub datasets (config and split),
clear errors for missing columns, and `selfdisco train` on CSV and Parquet pairs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from selfdisco.datafiles import DataSpec, load_table, parse_spec, require_columns
from selfdisco.errors import UserError
from selfdisco.train.data import load_preferences

PAIRS = [{"prompt": f"Review {i}:", "chosen": " lovely", "rejected": " awful"} for i in range(8)]


def write(path, rows):
    """Write `rows` in the format the suffix names."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        import csv

        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_local_format_loads_the_same_rows(tmp_path, suffix):
    path = write(tmp_path / f"pairs{suffix}", PAIRS)
    table, where = load_table(str(path))
    assert table.to_list() == PAIRS and where == str(path)
    assert load_preferences(path).to_list() == PAIRS


def test_a_json_file_may_wrap_its_rows_in_data(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": PAIRS}))
    assert load_table(str(path))[0].to_list() == PAIRS


@pytest.mark.parametrize(("text", "spec"), [
    ("org/name", DataSpec("org/name", local=False)),
    ("org/name:default", DataSpec("org/name", local=False, config="default")),
    ("org/name:en:test", DataSpec("org/name", local=False, config="en", split="test")),
    ("org/name::validation", DataSpec("org/name", local=False, split="validation")),
])
def test_hub_ids_carry_config_and_split(text, spec):
    assert parse_spec(text) == spec
    assert parse_spec("org/name", split="test").split == "test"  # the caller's default
    assert parse_spec("org/name::dev", split="test").split == "dev"  # the text wins


def test_a_path_is_local_even_before_it_exists(tmp_path):
    assert parse_spec(str(tmp_path / "later.csv")).local
    assert parse_spec("./data/pairs.parquet").local
    with pytest.raises(UserError, match="not a data source"):
        parse_spec("org/name:a:b:c")


def test_hub_errors_name_the_config_and_split(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match=r"cannot load the dataset 'no-org/no-set' \(config 'en', "
                                        r"split 'test'\) for the preference data"):
        load_preferences("no-org/no-set:en:test")


def test_missing_columns_name_what_exists_and_what_is_expected(tmp_path):
    path = write(tmp_path / "pairs.csv", [{"question": "q", "good": "a", "bad": "b"}])
    with pytest.raises(UserError, match=r"missing column\(s\) prompt, chosen, rejected \(its "
                                        r"columns: question, good, bad\); give --data"):
        load_preferences(path)
    table, where = load_table(str(path))
    with pytest.raises(UserError, match=r"pairs.csv: missing column\(s\) text .*set review_col"):
        require_columns(table, ["text"], where, "set review_column")


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="review data must be a .jsonl, .json, .csv or .parquet"):
        load_table(str(tmp_path / "reviews.txt"), what="review")
    with pytest.raises(UserError, match="question file not found"):
        load_table(str(tmp_path / "absent.parquet"), what="question")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="cannot read .*broken.parquet"):
        load_table(str(broken))
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    assert len(load_table(str(empty))[0]) == 0


def test_empty_cells_count_as_missing(tmp_path):
    rows = [dict(PAIRS[0]), {"prompt": "p", "chosen": "c", "rejected": None}]
    path = write(tmp_path / "holes.parquet", rows)
    with pytest.raises(UserError, match=r"row 1: missing column\(s\) rejected"):
        load_preferences(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_train_reads_csv_and_parquet(tmp_path, suffix):
    data = write(tmp_path / f"pairs{suffix}", PAIRS)
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "selfdisco", "train", "--loss", "dpo", "--data", str(data),
         "--preset", "smoke", "--steps", "2", "--out", str(out), "--no-ref-cache", "--json"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and summary["pairs"] == len(PAIRS)
    assert summary["steps_done"] == 2 and summary["out_dir"] == str(out)
    assert (out / "adapter" / "adapter_model.safetensors").exists()

"""Preference data loading and checking (no model involved)."""

from __future__ import annotations

import json

import pytest

from selfdisco.errors import UserError
from selfdisco.train.data import load_preferences

PLAIN = [{"prompt": "Say hi.", "chosen": " Hi!", "rejected": " No."},
         {"prompt": "Count.", "chosen": " 1 2 3", "rejected": " 7"}]
CHAT = [{"prompt": [{"role": "user", "content": "Say hi."}],
         "chosen": [{"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "assistant", "content": "No."}]}]


def test_plain_list():
    dataset = load_preferences(PLAIN)
    assert dataset.column_names == ["prompt", "chosen", "rejected"]
    assert dataset[1]["chosen"] == " 1 2 3"


def test_extra_columns_are_dropped():
    dataset = load_preferences([{**PLAIN[0], "score": 3}])
    assert dataset.column_names == ["prompt", "chosen", "rejected"]


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_files(tmp_path, suffix):
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in PLAIN))
    elif suffix == ".json":
        path.write_text(json.dumps(PLAIN))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(PLAIN), path)
    assert load_preferences(path).to_list() == PLAIN


def test_conversational_rows_and_a_plain_prompt_becomes_a_user_turn():
    dataset = load_preferences(CHAT)
    assert dataset[0]["chosen"][0]["role"] == "assistant"
    row = {**CHAT[0], "prompt": "Say hi."}
    assert load_preferences([row])[0]["prompt"] == [{"role": "user", "content": "Say hi."}]


def test_conversational_rows_may_leave_the_prompt_implicit():
    turn = [{"role": "user", "content": "Say hi."}]
    row = {"chosen": turn + CHAT[0]["chosen"], "rejected": turn + CHAT[0]["rejected"]}
    assert load_preferences([row]).column_names == ["chosen", "rejected"]


@pytest.mark.parametrize(("rows", "message"), [
    ([], "holds no preference pairs"),
    ([{"prompt": "p", "chosen": "c"}], r"row 0: missing column\(s\) rejected"),
    ([{"chosen": "c", "rejected": "r"}], "missing column 'prompt'"),
    ([{"prompt": "p", "chosen": "c", "rejected": 3}], "'rejected' must be a string"),
    ([PLAIN[0], CHAT[0]], "mixes plain-text and conversational"),
    (["not a dict"], "expected an object"),
])
def test_bad_rows_are_user_errors(rows, message):
    with pytest.raises(UserError, match=message):
        load_preferences(rows)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="preference file not found"):
        load_preferences(tmp_path / "absent.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="holds no preference pairs"):
        load_preferences(empty)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(UserError, match="cannot read"):
        load_preferences(broken)


def test_unreachable_hub_dataset_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot load the dataset 'no-such-org/no-such-set'"):
        load_preferences("no-such-org/no-such-set")

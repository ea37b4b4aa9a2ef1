"""digits' splits: a test split apart from training and validation that the search never reads,
training unchanged from the split runs were recorded with before, and such a run keeping its
split (and saying so) in `selfdisco heldout`."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from selfdisco.errors import UserError
from selfdisco.tasks import TaskContext, get_task
from selfdisco.tasks.digits import splits
from selfdisco.tasks.digits.task import DigitsSettings, train_and_score

# a digits run scored before the test split existed
RECORDED_RUN = Path(__file__).parents[2] / "data" / "runs" / "digits"


def test_the_test_split_is_apart_from_training_and_validation():
    current = splits.split_indices(DigitsSettings())
    train, validation, test = (set(current.train), set(current.validation), set(current.test))
    assert (len(train), len(validation), len(test)) == (1257, 270, 270)
    assert not train & validation and not train & test and not validation & test
    assert train | validation | test == set(range(1797))
    # every class is in each held-out split (stratified)
    _, target = splits.digits_data()
    assert len(set(target[current.test])) == len(set(target[current.validation])) == 10


def test_training_is_what_runs_recorded_before_trained_on():
    from sklearn.model_selection import train_test_split

    x, target = splits.digits_data()
    # how the split was made before split versions: 30% validation, stratified, seed 0
    x_train, x_val, _, _ = train_test_split(x, target, test_size=0.3, random_state=0,
                                            stratify=target)
    current = splits.split_indices(DigitsSettings())
    old = splits.split_indices(DigitsSettings(split_version=1))
    assert np.array_equal(x[current.train], x_train) and np.array_equal(x[old.train], x_train)
    assert np.array_equal(x[old.validation], x_val) and len(old.test) == 0
    # the new validation and test splits are the old validation split, halved
    assert set(current.validation) | set(current.test) == set(old.validation)


def test_the_search_never_reads_the_test_split(monkeypatch):
    x, target = splits.digits_data()
    test = splits.split_indices(DigitsSettings()).test
    poisoned = x.copy()
    poisoned[test] = np.nan  # any use of a test image would make the accuracy NaN or change it
    import torch.nn.functional as F

    def cross_entropy(logits, targets):
        return F.cross_entropy(logits, targets, reduction="none")

    search = DigitsSettings(epochs=2, max_seconds=600.0)  # the search's options: none set
    held_out = DigitsSettings(epochs=2, max_seconds=600.0, eval_split="test")
    clean = train_and_score(cross_entropy, search, seed=3)
    clean_test = train_and_score(cross_entropy, held_out, seed=3)
    monkeypatch.setattr(splits, "digits_data", lambda: (poisoned, target))
    blind = train_and_score(cross_entropy, search, seed=3)
    assert math.isfinite(blind.value) and blind.value == clean.value
    assert blind.metrics["eval_split"] == "validation" and blind.n == 270
    # held-out evaluation does read it: there the poison shows
    seen = train_and_score(cross_entropy, held_out, seed=3)
    assert seen.n == clean_test.n == 270 and seen.metrics["eval_split"] == "test"
    assert clean_test.value > 0.5 > seen.value


def test_split_options_are_checked():
    digits = get_task("digits")
    with pytest.raises(UserError, match="the search selects on the validation split"):
        digits.check_options("cpu", {"eval_split": "test"})
    with pytest.raises(UserError, match="split version 1 .* has no test split"):
        digits.settings(TaskContext(options={"eval_split": "test", "split_version": "1"}))
    with pytest.raises(UserError, match="eval_split must be validation or test"):
        digits.settings(TaskContext(options={"eval_split": "train"}))
    assert splits.run_split_version({}, [{"split_version": 2}]) == 2
    assert splits.run_split_version({}, [{"split_version": 2}, {"metric": "..."}]) == 1
    assert splits.run_split_version({"split_version": 2}, [{}]) == 2
    assert splits.run_split_version({}, []) == splits.SPLIT_VERSION


@pytest.fixture
def recorded_run(tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(RECORDED_RUN, copy)
    return copy


def test_a_run_recorded_before_the_test_split_keeps_its_split_and_says_so(recorded_run,
                                                                          capsys):
    from selfdisco.cli import main

    # confirming on unseen images is impossible: a clear error that says why and what to do
    assert main(["heldout", str(recorded_run), "--protocols", "confirm", "--losses",
                 "burn-label_smoothing", "--estimate"]) == 2
    err = capsys.readouterr().err
    assert "recorded before the digits task had a test split" in err
    assert "keeps its split, so it has no test split" in err and "--prompts search" in err
    assert "Traceback" not in err
    # on the search's own split, said so: its 540 validation images, not held out
    assert main(["heldout", str(recorded_run), "--protocols", "confirm", "--losses",
                 "burn-label_smoothing", "--prompts", "search", "--estimate"]) == 0
    out = capsys.readouterr().out
    assert "confirm: 8 of 8 points to measure" in out  # 4 seeds, 2 losses
    assert ("scored on the digits validation split (540 images) the search selected on (not "
            "held out): this run was recorded before the digits task had a test split") in out


def test_a_resumed_run_from_before_the_test_split_keeps_its_split(tmp_path):
    from selfdisco.config import read_run_config
    from selfdisco.tasks import recorded_task_options

    old = tmp_path / "old"
    shutil.copytree(RECORDED_RUN, old)
    assert recorded_task_options(read_run_config(old), old)["split_version"] == 1
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(old / "config.toml", fresh / "config.toml")
    options = recorded_task_options(read_run_config(fresh), fresh)
    assert options["split_version"] == splits.SPLIT_VERSION

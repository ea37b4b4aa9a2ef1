"""The digits images and their fixed splits.

70% of the 1797 images train (1257), the same images in every split version. Version 2 (runs
made from this version on) halves the other 30%, stratified, into a validation split (270
images: the search's fitness) and a test split (270 images) that only held-out evaluation reads,
so a winner can be confirmed on images its selection never saw. Version 1 (runs recorded
before) validated on all 540 and has no test split; such a run keeps it (run_split_version).
Halving validation rather than training keeps every loss's training data and budget as they
were; the search's accuracies have a standard error about 1.4 times the old one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

SPLIT_VERSION = 2  # how runs made from this version on split the images
EVAL_SPLITS = ("validation", "test")
TEST_SHARE = 0.5  # of the images held out from training (split version 2): the test split


@functools.cache
def digits_data() -> tuple[Any, Any]:
    """scikit-learn's digits as (images scaled to [0, 1], labels); read once per process."""
    # lazy: loads scikit-learn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split  # noqa: F401 - imported for the children

    data = load_digits()
    return data.data.astype("float32") / 16.0, data.target


@dataclass(frozen=True)
class Splits:
    """Indices into digits_data() of each split (test is empty under split version 1)."""

    train: Any
    validation: Any
    test: Any


def split_indices(settings: Any) -> Splits:
    """The fixed splits of a DigitsSettings' split_version, validation_fraction and
    split_seed: training is the same stratified share in both versions, and no image is in
    two splits."""
    # lazy: loads numpy, scikit-learn
    import numpy as np
    from sklearn.model_selection import train_test_split

    _, target = digits_data()
    index = np.arange(len(target))
    train, held = train_test_split(index, test_size=settings.validation_fraction,
                                   random_state=settings.split_seed, stratify=target)
    if settings.split_version == 1:
        return Splits(train, held, held[:0])
    validation, test = train_test_split(held, test_size=TEST_SHARE,
                                        random_state=settings.split_seed, stratify=target[held])
    return Splits(train, validation, test)


def load_split(settings: Any) -> tuple[Any, Any, Any, Any]:
    """The training split and the split the fitness is measured on (settings.eval_split) as
    float32/int64 tensors: (x_train, y_train, x_eval, y_eval). No other split is read."""
    # lazy: loads torch
    import torch

    x, target = digits_data()
    splits = split_indices(settings)
    scored = getattr(splits, settings.eval_split)
    return (torch.from_numpy(x[splits.train]), torch.from_numpy(target[splits.train]).long(),
            torch.from_numpy(x[scored]), torch.from_numpy(target[scored]).long())


def run_split_version(options: dict[str, Any], recorded: list[dict]) -> int:
    """The split version a run's evaluations used: its task option, else 1 when one of its
    recorded evaluations (their metrics) has no split_version (scored before the test split
    existed), else the current one."""
    if "split_version" in options:
        return int(options["split_version"])
    if any("split_version" not in metrics for metrics in recorded):
        return 1
    return SPLIT_VERSION

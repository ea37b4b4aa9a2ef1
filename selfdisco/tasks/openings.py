"""Movie-review openings for the sentiment task: made from templates, or cut from real reviews.

The templates and word lists live in prompts/sentiment/openings.toml. Every template is filled
with every combination of its words; the openings of each template are shuffled by a fixed seed
and a fixed share of them is held out, so both splits cover every template. The lists interleave
the templates, so any prefix of a list is balanced across them.
"""

from __future__ import annotations

import itertools
import random
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path

from selfdisco.datafiles import load_table, require_columns
from selfdisco.errors import UserError
from selfdisco.rundir.paths import prompts_dir

OPENINGS_FILE = "sentiment/openings.toml"


@dataclass(frozen=True)
class Split:
    train: list[str]
    held_out: list[str]


def template_openings(path: Path | None = None) -> list[list[str]]:
    """All openings, grouped by template, in the file's order."""
    path = path or prompts_dir() / OPENINGS_FILE
    spec = tomllib.loads(path.read_text())
    words: dict[str, list[str]] = spec["words"]
    groups = []
    for template in spec["templates"]:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name]
        unknown = [name for name in fields if name not in words]
        if unknown:
            raise ValueError(f"{path}: template {template!r} names unknown word lists {unknown}")
        combos = itertools.product(*(words[name] for name in fields))
        groups.append([template.format(**dict(zip(fields, combo, strict=True)))
                       for combo in combos])
    return groups


def split_openings(groups: list[list[str]], seed: int = 0,
                   held_out_fraction: float = 0.2) -> Split:
    """Shuffle each group by `seed`, hold out a fixed share of each, interleave the groups."""
    rng = random.Random(seed)
    train_groups, held_groups = [], []
    seen: set[str] = set()
    for group in groups:
        unique = [text for text in dict.fromkeys(group) if text not in seen]
        seen.update(unique)
        rng.shuffle(unique)
        cut = max(1, round(len(unique) * held_out_fraction))
        held_groups.append(unique[:cut])
        train_groups.append(unique[cut:])
    return Split(train=_interleave(train_groups), held_out=_interleave(held_groups))


def _interleave(groups: list[list[str]]) -> list[str]:
    out = []
    for row in itertools.zip_longest(*groups):
        out.extend(text for text in row if text is not None)
    return out


def dataset_openings(source: str, *, column: str = "text", words: int = 6,
                     limit: int = 2000, seed: int = 0, held_out_fraction: float = 0.2) -> Split:
    """Openings cut from real reviews: the first `words` words of each, from a Hugging Face
    dataset id or a local .jsonl/.json/.csv/.parquet file with a `column` of review text."""
    texts = _load_texts(source, column, limit)
    openings = []
    for text in texts:
        clean = re.sub(r"<[^>]+>", " ", text)
        head = " ".join(clean.split()[:words])
        if head:
            openings.append(head)
    openings = list(dict.fromkeys(openings))
    if len(openings) < 10:
        raise UserError(f"{source}: found only {len(openings)} distinct review openings in "
                        f"column {column!r}; the sentiment task needs at least 10")
    random.Random(seed).shuffle(openings)
    cut = max(1, round(len(openings) * held_out_fraction))
    return Split(train=openings[cut:], held_out=openings[:cut])


def _load_texts(source: str, column: str, limit: int) -> list[str]:
    data, where = load_table(source, what="review")
    require_columns(data, [column], where, f"the task option review_column names {column!r}: "
                    "set it to the column that holds the review text")
    return [str(t) for t in data.select(range(min(limit, len(data))))[column]]

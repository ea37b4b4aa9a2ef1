"""Load a loss by catalog name, from a .py file, or from a JSON candidate file."""

from __future__ import annotations

from pathlib import Path

from selfdisco.errors import UserError
from selfdisco.losses import catalog
from selfdisco.losses.candidate import Candidate
from selfdisco.losses.parse import ParseError, parse_candidate


def load_loss(spec: str) -> Candidate:
    """A candidate from a catalog name, a .py file (the code) or a JSON candidate file.

    Raises UserError when `spec` is none of these, or the file cannot be read or parsed.
    """
    if spec in catalog.CATALOG:
        return catalog.get(spec).candidate
    path = Path(spec).expanduser()
    if path.suffix not in (".py", ".json"):
        raise UserError(f"unknown loss '{spec}': give a catalog name ({', '.join(catalog.names())})"
                        ", a .py file with one loss function, or a .json candidate file")
    text = read_loss_file(path)
    if path.suffix == ".py":
        return Candidate(thought="", name=path.stem, code=text)
    try:
        candidate = parse_candidate(text)
    except ParseError as err:
        raise UserError(f"{path} is not a JSON candidate: {err}") from None
    return candidate


def read_loss_file(path: Path) -> str:
    """The text of a loss or candidate file; a UserError when it is missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None

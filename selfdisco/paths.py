"""Where selfdisco keeps its files: run directories and bundled models."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The directory that holds checkpoints/: $SELFDISCO_HOME, the source checkout, or cwd."""
    env = os.environ.get("SELFDISCO_HOME")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.cwd()


def checkpoints_dir() -> Path:
    return project_root() / "checkpoints"


def models_dir() -> Path:
    return checkpoints_dir() / "models"


def prompts_dir() -> Path:
    """Prompt templates: prompts/ in a checkout, else the copy shipped in the package."""
    checkout = Path(__file__).resolve().parent.parent / "prompts"
    if checkout.is_dir():
        return checkout
    return Path(__file__).resolve().parent / "prompts"


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file beside `path` and a rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

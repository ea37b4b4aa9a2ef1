"""Where selfdisco keeps its files: run directories and bundled models."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from selfdisco.errors import UserError

RUN_CONFIG = "config.toml"
# The installed package, and the data files it ships (selfdisco/data/).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = PACKAGE_DIR / "data"


def project_root() -> Path:
    """The directory that holds checkpoints/: $SELFDISCO_HOME, the source checkout, or cwd."""
    env = os.environ.get("SELFDISCO_HOME")
    if env:
        return Path(env).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.cwd()


def checkpoints_dir() -> Path:
    return project_root() / "checkpoints"


def run_ids() -> list[str]:
    """The ids of the run directories under checkpoints/ (those holding a config.toml)."""
    root = checkpoints_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / RUN_CONFIG).is_file())


def resolve_run(spec: str | Path, required: str = RUN_CONFIG) -> Path:
    """A run directory named by a path or by a run id under checkpoints/.

    Args:
        spec: a path to the run directory, or its id (the directory name under checkpoints/).
        required: a file the directory must hold to count as a run directory.

    Returns:
        The run directory, resolved.
    """
    path = Path(spec).expanduser()
    under = checkpoints_dir() / path
    if not path.is_dir() and not path.is_absolute() and under.is_dir():
        path = under
    if not path.is_dir():
        raise UserError(f"no run directory {str(spec)!r}; give a path or a run id under "
                        f"{checkpoints_dir()}{_near_runs(str(spec))}")
    if not (path / required).is_file():
        raise UserError(f"{path} has no {required}, so it is not a selfdisco run directory "
                        "(or its run has not started yet); start one with `selfdisco run`")
    return path.resolve()


def _near_runs(spec: str) -> str:
    """'; did you mean: a, b' for run ids close to `spec`, or '' when none are."""
    ids = run_ids()
    name = Path(spec).name
    near = [i for i in ids if name and name in i]
    near += [i for i in difflib.get_close_matches(name, ids, n=5, cutoff=0.5) if i not in near]
    return f"; did you mean: {', '.join(near[:5])}" if near else ""


def models_dir() -> Path:
    return checkpoints_dir() / "models"


def prompts_dir() -> Path:
    """Prompt templates: prompts/ in a checkout, else the copy shipped in the package."""
    checkout = PACKAGE_DIR.parent / "prompts"
    if checkout.is_dir():
        return checkout
    return PACKAGE_DIR / "prompts"


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temporary file beside `path` and a rename, so readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

"""Where the installed `selfdisco` console script lives, whether or not its venv is on PATH."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def selfdisco_script() -> str:
    beside = Path(sys.executable).with_name("selfdisco")
    if beside.exists():
        return str(beside)
    return shutil.which("selfdisco") or "selfdisco"


SELFDISCO = selfdisco_script()

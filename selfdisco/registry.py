"""Named registries with lazy "module:attr" targets (tasks, executors).

Naming what is registered imports nothing; the first use of a name imports its module.
"""

from __future__ import annotations

import importlib
from typing import Any

from selfdisco.errors import UserError


class Registry:
    """Names mapped to "package.module:attr" targets, each imported on first use.

    Args:
        what: what the names are ("task", "executor"), for error messages.
        targets: name -> "package.module:attr".
    """

    def __init__(self, what: str, targets: dict[str, str]):
        for name, target in targets.items():
            module, _, attr = target.partition(":")
            if not (module and attr):
                raise ValueError(f"{what} {name!r}: target {target!r} must look like "
                                 "'package.module:attr'")
        self.what = what
        self.targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def names(self) -> list[str]:
        return list(self.targets)

    def load(self, name: str) -> Any:
        """The object registered under `name`; UserError naming the known ones otherwise."""
        if name not in self.targets:
            raise UserError(f"unknown {self.what} {name!r}; known {self.what}s: "
                            f"{', '.join(self.targets)}")
        target = self.targets[name]
        if target not in self._loaded:
            module, attr = target.split(":", 1)
            self._loaded[target] = getattr(importlib.import_module(module), attr)
        return self._loaded[target]

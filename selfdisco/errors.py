"""Errors that reach the user as a plain message instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, a missing model.

    The message says what is wrong and how to fix it; the CLI prints it and exits 2.
    """

"""Errors that reach the user as a plain message instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: bad input, a missing file, a missing model.

    The message says what is wrong and how to fix it; the CLI prints it and exits 2.
    """


def one_line(err: BaseException, limit: int = 300) -> str:
    """`Type: first line of the message`, cut to `limit` characters: an error as a reason."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return line[:limit]

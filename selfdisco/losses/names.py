"""Honest names: a candidate keeps a catalog loss's name, or an earlier candidate's, only if it
behaves the same (pure Python: it compares fingerprints computed in the sandbox).

A candidate that reaches naming has already passed de-duplication, so it behaves differently
from every candidate evaluated so far; a name it shares with one of them, or with a catalog loss
it does not match, is changed: "dpo" becomes "dpo_variant", a second "ridge" becomes "ridge-2".
Names match ignoring case and the difference between "-" and "_".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from selfdisco.losses import catalog
from selfdisco.losses.fingerprint import Fingerprint

VARIANT = "_variant"


def key(name: str) -> str:
    """The form two names are compared in: "KTO-pair" and "kto_pair" are the same name."""
    return name.strip().lower().replace("-", "_")


def honest_name(name: str, fingerprint: Fingerprint, earlier: Iterable[tuple[str, str]],
                catalog_fingerprint: Callable[[str], Fingerprint | None],
                tolerance: float) -> tuple[str, str | None]:
    """The name to show for a new candidate and, when it is not `name`, the reason.

    Args:
        name: the name the proposer gave.
        fingerprint: the candidate's.
        earlier: (id, name) of the candidates already admitted in this run, burn-in included.
        catalog_fingerprint: a catalog loss's fingerprint by its name (None if unavailable).
        tolerance: the run's duplicate tolerance.
    """
    taken = {key(other): id for id, other in earlier}
    claimed = key(name)
    loss = {key(n): n for n in catalog.names()}.get(claimed)
    if loss is not None:
        reference = catalog_fingerprint(loss)
        distance = fingerprint.distance(reference) if reference is not None else 1.0
        if distance > tolerance:
            shown = free_name(f"{loss}{VARIANT}", taken)
            return shown, (f"proposed as {name!r}, but it does not behave like the catalog's "
                           f"{loss} (fingerprint distance {distance:.3g}, duplicates are within "
                           f"{tolerance:g}); shown as {shown!r}")
    if claimed in taken:
        shown = free_name(name, taken)
        return shown, (f"proposed as {name!r}, the name of {taken[claimed]}, which behaves "
                       f"differently; shown as {shown!r}")
    return name, None


def free_name(name: str, taken: dict[str, str]) -> str:
    """`name`, or `name-2`, `name-3`, ... whichever is not taken."""
    shown, n = name, 1
    while key(shown) in taken:
        n += 1
        shown = f"{name}-{n}"
    return shown

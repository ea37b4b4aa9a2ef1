"""The kinds of candidate loss: how each is called and which checks screen it.

Every kind goes through the same static check (static.py); only its signature rule comes from
here. A new kind is a new LossKind in KINDS, and nothing else registers one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossKind:
    """One kind of candidate loss."""

    name: str
    parameters: tuple[str, ...]
    """The positional arguments the loss is called with, in order (the code's names are free)."""
    checks_module: str
    """The module whose run_checks(code, beta) the screening sandbox calls (a path, not an
    import: the classification checks live in a task, above this layer)."""
    call: str
    """How the loss is called and what it returns, in one line, for error messages."""
    optional: tuple[str, ...] = ()
    """Trailing parameters the method form may leave out; it reads self.<name> instead."""
    method_form: bool = False
    """Whether the paper's method form `def loss(self, ...)` is accepted."""
    extra_defaults: bool = False
    """Whether the function may take further parameters, each with a default."""

    @property
    def signature(self) -> str:
        return "(" + ", ".join(self.parameters) + ")"


KINDS: dict[str, LossKind] = {
    "preference": LossKind(
        name="preference",
        parameters=("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
                    "reference_rejected_logps", "beta"),
        optional=("beta",),
        method_form=True,
        extra_defaults=True,
        checks_module="selfdisco.losses.checks",
        call="four (B,) log-prob tensors and beta in, per-pair losses of shape (B,) out; or "
             "the method form (self, four log-probs) reading self.beta"),
    "classification": LossKind(
        name="classification",
        parameters=("logits", "targets"),
        checks_module="selfdisco.tasks.digits.checks",
        call="logits (B, C) float and targets (B,) int64 in, per-example losses of shape (B,) "
             "out"),
}


def get_kind(name: str) -> LossKind:
    """The kind called `name`; ValueError naming the known kinds for any other name."""
    if name not in KINDS:
        raise ValueError(f"unknown loss kind {name!r}; the kinds are {', '.join(KINDS)}")
    return KINDS[name]

"""A proposed loss: the {thought, name, code} record shared by the catalog and the proposer."""

from __future__ import annotations

from dataclasses import asdict, dataclass

FIELDS = ("thought", "name", "code")


@dataclass(frozen=True)
class Candidate:
    """One loss proposal.

    `code` defines one Python function called as
    fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
    reference_rejected_logps, beta) -> per-example losses of shape (B,). The paper's method form,
    fn(self, <four tensors>) reading `self.beta`, is accepted too.
    """

    thought: str
    name: str
    code: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        """Build from a mapping with the keys thought, name and code (thought may be missing)."""
        missing = [key for key in ("name", "code") if key not in data]
        if missing:
            raise ValueError(f"candidate is missing {', '.join(missing)}")
        return cls(thought=str(data.get("thought", "")), name=str(data["name"]),
                   code=str(data["code"]))

"""What the discovery loop shares with the steps it delegates to (propose.py, proposer/promotion.py,
search/fidelity.py, search/population.py): the services it talks to, its state, and the Loop
protocol those steps are typed with. loop.Discovery satisfies Loop; the steps never import loop.py
(it imports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from selfdisco.config import DiscoveryConfig, RunConfig
from selfdisco.execution.records import Result
from selfdisco.losses.screening import ScreenResult
from selfdisco.rundir.archive import Archive, Row
from selfdisco.rundir.events import EventWriter


@dataclass
class Services:
    """What the loop talks to. proposer answers chat(); adapters loads proposer adapters
    (the policy server's client, or None when nothing can be served, as in a replay)."""

    proposer: Any
    evaluator: Any
    screen: Callable  # screen(candidate, timeout_s=..., beta=...) -> ScreenResult
    parse: Callable  # parse(text) -> Candidate, raising ValueError with a reason
    catalog: Callable  # catalog(name) -> dict(name, full_name, code)
    adapters: Any = None
    burn_in_cache: Any = None  # get(id, code) -> Result | None, put(id, code, result)
    task_description: str = ""
    beta: float = 0.05
    prompts: str = ""  # the task's own prompts folder under prompts/ ("": the preference ones)
    reference_loss: str = "dpo"  # the catalog loss whose shape is drawn beside the others
    health: Callable | None = None  # restarts a crashed model server; True if it did
    proposer_trainer: Any = None  # trains proposer adapters (selftrain.py); None: the default


@dataclass
class State:
    proposer_id: str = "base"
    proposer_adapter: str | None = None  # the adapter name served for the proposer, None = base
    proposer_fitness: float | None = None
    fingerprints: dict = field(default_factory=dict)  # candidate id -> Fingerprint
    catalog_fingerprints: dict = field(default_factory=dict)  # catalog name -> Fingerprint


@dataclass
class ProposerRequests:
    """The proposer requests of one generation (a run whose every request fails stops)."""

    sent: int = 0
    failed: int = 0
    last_error: str = ""  # the first line of the latest failure


class Loop(Protocol):
    """The running loop as its steps see it."""

    config: RunConfig
    settings: DiscoveryConfig  # config.discovery
    run_dir: Path
    archive: Archive
    events: EventWriter
    services: Services
    state: State
    requests: ProposerRequests
    can_self_improve: bool  # self_improve is on and the proposer is the policy's own model

    def proposer_messages(self, shown: list[Row] | None = None) -> list[dict]:
        """The proposer's context with `shown` proposals (default: every one) as history."""

    def ask_proposer(self, messages: list[dict], n: int, seed: int,
                     model: str | None) -> list[str]:
        """n answers of the proposer served as `model` (None: the base model)."""

    def screen(self, name: str, code: str) -> ScreenResult:
        """Screen code in the sandbox at the run's timeout and beta."""

    def record_result(self, row: Row, result: Result) -> None:
        """Write a row's final result to the archive and announce it."""

    def mark_stage(self, g: int, stage: str, state: str, detail: str) -> None:
        """Announce that a stage of generation g starts or ends."""

    def checkpoint(self) -> bool:
        """Obey pause/resume/stop commands; True when the run should stop now."""

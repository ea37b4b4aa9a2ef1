"""Which model servers a run needs, where the proposer comes from, who restarts and who sleeps.

Roles: the policy's server samples the base model and the candidates' LoRA adapters; the
proposer model writes candidate losses; a judge model scores a task that needs one. Roles that
name the same model share one server (ServerPlan, plan_servers).

The proposer source is the --proposer value (config key server.proposer), parsed here only
(parse_source): "local" (selfdisco serves the proposer model), "http://HOST:PORT/v1" (a
running server) or "replay:RUN_DIR" (a recorded run's answers, no model). The same forms name
the servers of `selfdisco eval`.

Restarts: a server selfdisco started (VLLMServer) is restarted by its own clients when a request
fails (LLMClient's `recover`, which re-serves the adapters loaded through it) and, for the
policy's server, by the loop's health check after an evaluation failed on the server. An attached
server (a URL) is never restarted: it is someone else's.

Sleep: on a GPU the policy's server, when selfdisco started it, sleeps while a worker trains on
that GPU (sleep_url); the worker calls `asleep(root_url)`, and VLLMServer.sleep/wake_up call the
same functions. Attached servers and the proposer's or judge's own servers never sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from selfdisco.errors import UserError

if TYPE_CHECKING:
    from selfdisco.config import RunConfig

SOURCE_FORMS = "local, http://HOST:PORT/v1 (a running server) or replay:RUN_DIR"
SLEEP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class LLMSource:
    """Where a model's answers come from: kind "local", "http" or "replay"."""

    kind: str
    url: str | None = None  # http: the API root, ending in /v1
    run_dir: Path | None = None  # replay: the recorded run


def parse_source(text: str, option: str = "--proposer") -> LLMSource:
    """Parse a source value; UserError naming `option` and the accepted forms otherwise."""
    text = (text or "").strip()
    if text == "local":
        return LLMSource("local")
    if text.startswith("replay:"):
        run_dir = text.removeprefix("replay:").strip()
        if not run_dir:
            raise UserError(f"{option} replay: needs a run directory, e.g. "
                            f"replay:checkpoints/<run-id> (accepted: {SOURCE_FORMS})")
        return LLMSource("replay", run_dir=Path(run_dir).expanduser())
    if text.startswith(("http://", "https://")):
        parsed = urlparse(text)
        if not parsed.hostname:
            raise UserError(f"{option} {text!r}: the URL has no host (accepted: {SOURCE_FORMS})")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as err:
            raise UserError(f"{option} {text!r}: bad port ({err})") from None
        url = text.rstrip("/")
        return LLMSource("http", url=url if url.endswith("/v1") else url + "/v1")
    raise UserError(f"{option} {text!r} is not understood; use {SOURCE_FORMS}")


def parse_server_url(text: str, option: str = "server.url") -> str:
    """An existing server's API root (…/v1); UserError unless `text` is an http(s) URL."""
    source = parse_source(text, option)
    if source.kind != "http":
        raise UserError(f"{option} {text!r} must be a server's URL, http://HOST:PORT/v1")
    return source.url


@dataclass(frozen=True)
class ServerPlan:
    """Which server answers each role of a run.

    Attributes:
        policy: "managed" (selfdisco starts it) or "attached" (server.url); "" in a replay.
        proposer: "policy" (the policy's server: the same model), "managed" (a server of its
            own), "attached" (the --proposer URL) or "replay".
        judge: "" (the task needs none), "policy" (the policy's server), "proposer" (the
            proposer's server: the same model) or "managed" (a server of its own).
    """

    policy: str
    proposer: str
    judge: str


def plan_servers(config: RunConfig, needs_judge: bool) -> ServerPlan:
    """The servers `config` needs; `needs_judge` is the task's declaration."""
    source = parse_source(config.server.proposer)
    if source.kind == "replay":
        return ServerPlan(policy="", proposer="replay", judge="")
    policy = "attached" if config.server.url else "managed"
    if source.kind == "http":
        proposer = "attached"
    elif config.proposer_model == config.models.policy:
        proposer = "policy"
    else:
        proposer = "managed"
    if not needs_judge:
        judge = ""
    elif config.judge_model == config.models.policy:
        judge = "policy"
    elif config.judge_model == config.proposer_model:
        judge = "proposer"
    else:
        judge = "managed"
    return ServerPlan(policy=policy, proposer=proposer, judge=judge)


def sleep_url(server: Any) -> str:
    """The root URL a worker puts to sleep while it trains: a managed policy server's when it
    has sleep mode (a GPU), else "" (attached servers are never put to sleep)."""
    return server.root_url if server.sleep_enabled else ""


def sleep(root_url: str, level: int = 1) -> None:
    """Ask the vLLM server at root_url (no /v1) to free the GPU: weights offloaded (level 1)
    or dropped (level 2), KV cache dropped. It must run with sleep mode enabled."""
    import httpx

    httpx.post(f"{root_url}/sleep", params={"level": level},
               timeout=SLEEP_TIMEOUT_S).raise_for_status()


def wake_up(root_url: str) -> None:
    """Undo sleep()."""
    import httpx

    httpx.post(f"{root_url}/wake_up", timeout=SLEEP_TIMEOUT_S).raise_for_status()


@contextmanager
def asleep(root_url: str, level: int = 1) -> Iterator[bool]:
    """The server at root_url sleeps inside the block and wakes after it; with root_url ""
    nothing happens. Yields whether it slept."""
    if not root_url:
        yield False
        return
    sleep(root_url, level)
    try:
        yield True
    finally:
        wake_up(root_url)

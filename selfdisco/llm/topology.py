"""Which model servers a run needs, where the proposer comes from, who restarts and who sleeps.

Roles: the policy's server samples the base model and the candidates' LoRA adapters; the
proposer model writes candidate losses; a judge model scores a task that needs one. Roles that
name the same model share one server (ServerRoles, server_roles).

The proposer source is the --proposer value (config key server.proposer_source), parsed here only
(parse_source): "local" (selfdisco serves the proposer model), "http://HOST:PORT/v1" (a
running server) or "replay:RUN_DIR" (a recorded run's answers, no model). The same forms name
the servers of `selfdisco eval`.

Restarts: a server selfdisco started (VLLMServer) is restarted by its own clients when a request
fails (LLMClient's `recover`, which re-serves the adapters loaded through it) and, for the
policy's server, by the loop's health check after an evaluation failed on the server. An attached
server (a URL) is never restarted: it is someone else's.

Sleep: on a GPU the policy's server, when selfdisco started it and the placement plan
(selfdisco.launch.plan) trains on its GPU, sleeps while a worker trains (sleep_url). Attached
servers and the proposer's or judge's own servers never sleep. Sleep and wake-up are owned here:
each training job holds a lease (a file per holder in a directory per server, under a file lock,
so separate worker processes agree); the first lease puts the server to sleep and the server
wakes when the last one is released, then must answer a 1-token completion (WakeError
otherwise). A lease whose process died counts for nothing, and the process that started a worker
calls `release_leases(pid)` once it ended (killed on a timeout or not), which wakes the server
when that worker held the last lease. The worker calls `asleep(root_url, model)`; VLLMServer's
asleep/sleep/wake_up call the same functions.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx
import psutil

from selfdisco.errors import UserError, one_line
from selfdisco.llm.client import LLMError

if TYPE_CHECKING:
    from selfdisco.config import RunConfig

SOURCE_FORMS = "local, http://HOST:PORT/v1 (a running server) or replay:RUN_DIR"
SLEEP_TIMEOUT_S = 300.0
ASLEEP_MARK = "asleep.json"  # in a server's lease directory while it may be asleep
_held = itertools.count()  # numbers this process's leases


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
        if parsed.username or parsed.password or parsed.query:
            # The URL is saved with the run: a key in it would be written to config.toml.
            raise UserError(f"{option}: the URL carries credentials or a query; give the bare "
                            "API root (http://HOST:PORT/v1) and put the API key in an "
                            "environment variable named by the server's api_key_env setting")
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
class ServerRoles:
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


def server_roles(config: RunConfig, needs_judge: bool) -> ServerRoles:
    """The servers `config` needs; `needs_judge` is the task's declaration."""
    source = parse_source(config.server.proposer_source)
    if source.kind == "replay":
        return ServerRoles(policy="", proposer="replay", judge="")
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
    return ServerRoles(policy=policy, proposer=proposer, judge=judge)


def sleep_url(server: Any) -> str:
    """The root URL a worker puts to sleep while it trains: a managed policy server's when it
    has sleep mode (a GPU), else "" (attached servers are never put to sleep)."""
    return server.root_url if server.sleep_enabled else ""


class WakeError(LLMError):
    """A server did not answer a real request after waking up."""


def sleep(root_url: str, level: int = 1) -> None:
    """Ask the vLLM server at root_url (no /v1) to free the GPU: weights offloaded (level 1)
    or dropped (level 2), KV cache dropped. It must run with sleep mode enabled. Uncoordinated:
    training jobs go through asleep()."""
    httpx.post(f"{root_url}/sleep", params={"level": level},
               timeout=SLEEP_TIMEOUT_S).raise_for_status()


def wake_up(root_url: str, model: str) -> None:
    """Undo sleep(), then check that the server answers: /is_sleeping says no and a 1-token
    completion of `model` (its served name) comes back. WakeError otherwise."""
    try:
        httpx.post(f"{root_url}/wake_up", timeout=SLEEP_TIMEOUT_S).raise_for_status()
        state = httpx.get(f"{root_url}/is_sleeping", timeout=SLEEP_TIMEOUT_S)
        state.raise_for_status()
        if state.json().get("is_sleeping"):
            raise WakeError(f"the model server at {root_url} still says it is asleep after "
                            "/wake_up; see its log")
        answer = httpx.post(f"{root_url}/v1/completions", timeout=SLEEP_TIMEOUT_S,
                            json={"model": model, "prompt": "Hello", "max_tokens": 1,
                                  "temperature": 0})
        answer.raise_for_status()
        if not answer.json().get("choices"):
            raise WakeError(f"the model server at {root_url} answered a completion with no "
                            "choices after waking up")
    except (httpx.HTTPError, ValueError) as err:
        raise WakeError(f"the model server at {root_url} did not answer after waking up "
                        f"({one_line(err)}); see its log") from None


def lease_root() -> Path:
    """Where the sleep leases of every server on this machine live (one directory each)."""
    return Path(tempfile.gettempdir()) / f"selfdisco-sleep-{os.getuid()}"


@contextmanager
def asleep(root_url: str, model: str = "", level: int = 1) -> Iterator[bool]:
    """The server at root_url sleeps inside the block, for as long as any holder is inside
    one, and wakes (checked, see wake_up) when the last holder leaves; with root_url ""
    nothing happens. Yields whether the server is asleep.

    Args:
        model: the server's served model name, for the check after waking up.
    """
    if not root_url:
        yield False
        return
    lease = hold(root_url, model, level)
    try:
        yield True
    finally:
        release(root_url, lease)


def hold(root_url: str, model: str, level: int = 1) -> str:
    """Take a sleep lease for this process; the first live lease puts the server to sleep.
    Returns the lease's name, for release()."""
    directory = _server_dir(root_url)
    with _locked(directory):
        first = not _live_leases(directory)
        lease = directory / "leases" / _holder_name()
        lease.write_text(root_url)
        if first:
            # Written before the request: a holder killed inside it still leaves the mark.
            marker = directory / ASLEEP_MARK
            marker.write_text(json.dumps({"root_url": root_url, "model": model}))
            try:
                sleep(root_url, level)
            except BaseException:
                lease.unlink(missing_ok=True)
                marker.unlink(missing_ok=True)
                raise
    return lease.name


def release(root_url: str, lease: str) -> None:
    """Give a lease back; the last one wakes the server (WakeError when it does not answer)."""
    directory = _server_dir(root_url)
    with _locked(directory):
        try:
            others = [p for p in _live_leases(directory) if p.name != lease]
            if not others:
                _wake(directory)
        finally:
            (directory / "leases" / lease).unlink(missing_ok=True)


def release_leases(pid: int) -> None:
    """After the process `pid` ended (a worker, killed or not): drop its leases, and wake every
    server it was the last to hold asleep."""
    root = lease_root()
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if not list(directory.glob(f"leases/{pid}-*")):
            continue
        with _locked(directory):
            if not _live_leases(directory):  # its leases count no more: it has ended
                _wake(directory)


def _server_dir(root_url: str) -> Path:
    parsed = urlparse(root_url)
    directory = lease_root() / f"{parsed.hostname}_{parsed.port}"
    (directory / "leases").mkdir(parents=True, exist_ok=True)
    return directory


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the server's lease directory; the system drops it if we die."""
    with open(directory / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _holder_name() -> str:
    """PID, process start time and a counter: unique, and tells whether the holder lives."""
    pid = os.getpid()
    return f"{pid}-{psutil.Process(pid).create_time():.2f}-{next(_held)}"


def _alive(name: str) -> bool:
    pid, started, _ = name.split("-")
    try:
        process = psutil.Process(int(pid))
        return (f"{process.create_time():.2f}" == started
                and process.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, ValueError):
        return False


def _live_leases(directory: Path) -> list[Path]:
    """The leases whose holder still runs; the others are removed."""
    live = []
    for lease in (directory / "leases").iterdir():
        if _alive(lease.name):
            live.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return live


def _wake(directory: Path) -> None:
    """Wake the server if it was put to sleep (the mark is there); the mark goes once it
    answers."""
    marker = directory / ASLEEP_MARK
    if not marker.exists():
        return
    state = json.loads(marker.read_text())
    wake_up(state["root_url"], state["model"])
    marker.unlink()

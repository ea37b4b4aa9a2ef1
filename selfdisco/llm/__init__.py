"""LLM access: a managed vLLM server, an HTTP client that records, and offline replay.

`open_proposer(spec, ...)` turns the --proposer value into a ready client:
  local                  start a vLLM server for the preset's model (stopped on close)
  http://HOST:PORT/v1    use a server that is already running
  replay:RUN_DIR         answer from a recorded run's cache, with no model
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from selfdisco.errors import UserError

if TYPE_CHECKING:
    from selfdisco.llm.client import BaseClient
    from selfdisco.llm.server import VLLMServer

SPEC_HELP = "local, http://HOST:PORT/v1 (a running server) or replay:RUN_DIR"


@dataclass(frozen=True)
class ProposerSpec:
    kind: str  # "local", "http" or "replay"
    url: str | None = None  # http: the API root, ending in /v1
    run_dir: Path | None = None  # replay: the recorded run


def parse_proposer_spec(spec: str) -> ProposerSpec:
    """Parse a --proposer value; raises UserError naming the accepted forms."""
    spec = (spec or "").strip()
    if spec == "local":
        return ProposerSpec("local")
    if spec.startswith("replay:"):
        run_dir = spec.removeprefix("replay:").strip()
        if not run_dir:
            raise UserError(f"--proposer replay: needs a run directory, e.g. "
                            f"replay:checkpoints/<run-id> (accepted: {SPEC_HELP})")
        return ProposerSpec("replay", run_dir=Path(run_dir).expanduser())
    if spec.startswith(("http://", "https://")):
        parsed = urlparse(spec)
        if not parsed.hostname:
            raise UserError(f"--proposer {spec!r}: the URL has no host (accepted: {SPEC_HELP})")
        try:
            parsed.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as err:
            raise UserError(f"--proposer {spec!r}: bad port ({err})") from None
        url = spec.rstrip("/")
        if not url.endswith("/v1"):
            url += "/v1"
        return ProposerSpec("http", url=url)
    raise UserError(f"--proposer {spec!r} is not understood; use {SPEC_HELP}")


@dataclass
class LLMEndpoint:
    """A ready client and, for `local`, the server it owns; close() stops that server."""

    kind: str
    client: BaseClient
    server: VLLMServer | None = None

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> LLMEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_proposer(spec: str, *, model_path: str | None = None, run_dir: str | Path | None = None,
                  model: str | None = None, server_options: dict | None = None,
                  client_options: dict | None = None) -> LLMEndpoint:
    """Open the LLM named by a --proposer value.

    Args:
        spec: see SPEC_HELP.
        model_path: local: the model to serve (a bundled name, a directory or a hub id).
        run_dir: this run's directory: exchanges are recorded in run_dir/llm, and a local
            server logs to run_dir/server.log. None records nothing.
        model: http: the served model's name (default: the server's first model).
        server_options, client_options: passed on to VLLMServer and LLMClient.
    """
    from selfdisco.llm.cache import Recorder

    parsed = parse_proposer_spec(spec)
    run_dir = Path(run_dir) if run_dir is not None else None
    recorder = Recorder(run_dir / "llm") if run_dir is not None else None
    client_options = client_options or {}
    if parsed.kind == "replay":
        from selfdisco.llm.replay import ReplayClient, cache_dir_of

        same = run_dir is not None and (cache_dir_of(parsed.run_dir).resolve()
                                        == (run_dir / "llm").resolve())
        client = ReplayClient(parsed.run_dir, recorder=None if same else recorder)
        return LLMEndpoint("replay", client)
    if parsed.kind == "http":
        from selfdisco.llm.client import LLMClient

        client = LLMClient(parsed.url, model or "", recorder=recorder, **client_options)
        if not model:
            names = client.list_models()
            if not names:
                raise UserError(f"the server at {parsed.url} serves no model")
            client.model = names[0]
        return LLMEndpoint("http", client)
    if not model_path:
        raise UserError("--proposer local needs a model to serve (the preset's model)")
    from selfdisco.llm.server import VLLMServer
    from selfdisco.models import resolve_model
    from selfdisco.paths import checkpoints_dir

    log_path = (run_dir or checkpoints_dir() / "serve") / "server.log"
    server = VLLMServer(resolve_model(model_path), log_path=log_path, **(server_options or {}))
    server.start()
    return LLMEndpoint("local", server.client(recorder=recorder, **client_options), server)

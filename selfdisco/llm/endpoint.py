"""An LLM endpoint: a managed vLLM server, an HTTP client that records, or offline replay.

`open_llm(source, ...)` turns a source value (see selfdisco.llm.topology) into a ready client:
  local                  start a vLLM server for a given model (stopped on close)
  http://HOST:PORT/v1    use a server that is already running
  replay:RUN_DIR         answer from a recorded run's cache, with no model
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selfdisco.errors import UserError
from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMClient
from selfdisco.llm.models import resolve_model
from selfdisco.llm.replay import ReplayClient, cache_dir_of
from selfdisco.llm.server import VLLMServer
from selfdisco.llm.topology import parse_source
from selfdisco.rundir.paths import checkpoints_dir

if TYPE_CHECKING:
    from selfdisco.llm.client import BaseClient
    from selfdisco.llm.server import VLLMServer


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


def open_llm(source: str, *, option: str = "--proposer", model_path: str | None = None,
             run_dir: str | Path | None = None, model: str | None = None,
             server_options: dict | None = None,
             client_options: dict | None = None) -> LLMEndpoint:
    """Open the LLM named by a source value.

    Args:
        source: local, http://HOST:PORT/v1 or replay:RUN_DIR (topology.parse_source).
        option: the option the value came from, named in errors.
        model_path: local: the model to serve (a bundled name, a directory or a hub id).
        run_dir: this run's directory: exchanges are recorded in run_dir/llm, and a local
            server logs to run_dir/server.log. None records nothing.
        model: http: the served model's name (default: the server's first model).
        server_options, client_options: passed on to VLLMServer and LLMClient (for http, e.g.
            api_key_env and structured).
    """
    parsed = parse_source(source, option)
    run_dir = Path(run_dir) if run_dir is not None else None
    recorder = Recorder(run_dir / "llm") if run_dir is not None else None
    client_options = client_options or {}
    if parsed.kind == "replay":
        same = run_dir is not None and (cache_dir_of(parsed.run_dir).resolve()
                                        == (run_dir / "llm").resolve())
        client = ReplayClient(parsed.run_dir, recorder=None if same else recorder)
        return LLMEndpoint("replay", client)
    if parsed.kind == "http":
        client = LLMClient(parsed.url, model or "", recorder=recorder, **client_options)
        try:
            names = client.list_models()  # checks the URL and the API key before any request
        except UserError:
            client.close()
            raise
        if not model:
            if not names:
                raise UserError(f"the server at {parsed.url} serves no model")
            client.model = names[0]
        return LLMEndpoint("http", client)
    if not model_path:
        raise UserError(f"{option} local needs a model to serve (the preset's model)")

    log_path = (run_dir or checkpoints_dir() / "serve") / "server.log"
    server = VLLMServer(resolve_model(model_path), log_path=log_path, **(server_options or {}))
    server.start()
    return LLMEndpoint("local", server.client(recorder=recorder, **client_options), server)

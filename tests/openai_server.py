"""A small OpenAI-protocol server for tests: plain http.server in a thread, no model.

It answers /v1/models, /v1/chat/completions and /v1/completions the way OpenAI-compatible
servers do, checks the "Authorization: Bearer" key when one is set, and records every request
(path, authorization header, JSON body) so a test can see what a client sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    authorization: str | None
    body: dict[str, Any] | None


class OpenAIServer:
    """Answers with texts from `answers` (a list used in order, then `fallback`), or from a
    function of the request body when `answers` is callable.

    Args:
        api_key: the key the server accepts; None accepts any request.
        models: the names /v1/models lists.
        honours_n: False answers one choice whatever n is (as some servers do).
    """

    def __init__(self, answers: list[str] | Callable[[dict], str] = (), *,
                 api_key: str | None = None, models: tuple[str, ...] = ("remote-model",),
                 honours_n: bool = True, fallback: str = "{}"):
        self.answers = answers if callable(answers) else list(answers)
        self.api_key = api_key
        self.models = list(models)
        self.honours_n = honours_n
        self.fallback = fallback
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                server._handle(self, None)

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                server._handle(self, json.loads(self.rfile.read(length) or b"{}"))

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bodies(self, path: str) -> list[dict]:
        """The JSON bodies of the requests to `path` (e.g. "/v1/chat/completions")."""
        return [r.body for r in self.requests if r.path == path]

    def _next_text(self, body: dict) -> str:
        if callable(self.answers):
            return self.answers(body)
        return self.answers.pop(0) if self.answers else self.fallback

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict | None) -> None:
        authorization = handler.headers.get("Authorization")
        with self.lock:
            self.requests.append(Request(handler.path, authorization, body))
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                status, answer = 401, {"error": {"message": "Incorrect API key provided",
                                                 "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}}
            elif handler.command == "GET" and handler.path == "/v1/models":
                status, answer = 200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "test"} for name in self.models]}
            elif handler.command == "POST" and handler.path in ("/v1/chat/completions",
                                                                "/v1/completions"):
                status, answer = 200, self._completion(handler.path, body)
            else:
                status, answer = 404, {"error": {"message": f"no route {handler.path}"}}
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _completion(self, path: str, body: dict) -> dict:
        n = int(body.get("n", 1)) if self.honours_n else 1
        choices = []
        for index in range(n):
            text = self._next_text(body)
            if path == "/v1/chat/completions":
                choices.append({"index": index, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": text}})
            else:
                choices.append({"index": index, "finish_reason": "stop", "text": text})
        return {"id": "test", "object": "chat.completion", "model": body.get("model"),
                "choices": choices}

"""The tests' one stand-in HTTP server: an OpenAI-protocol server, plain http.server in a
thread, no model.

It answers /health, /v1/models, /v1/chat/completions and /v1/completions the way
OpenAI-compatible servers (and vLLM) do, checks the "Authorization: Bearer" key when one is set,
and records every request (method, path with its query, authorization header, JSON body) so a
test can see what a client sent. A test can script the replies (HTTP status and body, in order)
or add routes of its own (vLLM's /sleep and /wake_up, a server that refuses everything). Run as
`python tests/openai_server.py PORT` it is a model-server process on that port (a stand-in for
vLLM that a VLLMServer starts), optionally printing a line and loading for a while first.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any]]  # an HTTP status and a JSON body


@dataclass
class Request:
    path: str  # with its query string, e.g. "/sleep?level=1"
    authorization: str | None
    body: dict[str, Any] | None
    method: str = "POST"


class OpenAIServer:
    """Answers with texts from `answers` (a list used in order, then `fallback`), or from a
    function of the request body when `answers` is callable.

    Args:
        api_key: the key the server accepts; None accepts any request.
        models: the names /v1/models lists.
        honours_n: False answers one choice whatever n is (as some servers do).
        script: replies given in order, one per request whatever its route, while any remain.
        respond: a route of the test's own: respond(request) -> a reply, or None for the
            server's routes.
        port: the port to listen on (0: a free one).
    """

    def __init__(self, answers: list[str] | Callable[[dict], str] = (), *,
                 api_key: str | None = None, models: tuple[str, ...] = ("remote-model",),
                 honours_n: bool = True, fallback: str = "{}", script: Iterable[Reply] = (),
                 respond: Callable[[Request], Reply | None] | None = None, port: int = 0):
        self.answers = answers if callable(answers) else list(answers)
        self.api_key = api_key
        self.models = list(models)
        self.honours_n = honours_n
        self.fallback = fallback
        self.script = list(script)
        self.respond = respond
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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root_url}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> OpenAIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bodies(self, path: str | None = None) -> list[dict]:
        """The JSON bodies of the requests to `path` (e.g. "/v1/chat/completions"), or of every
        request with a body."""
        return [r.body for r in self.requests
                if (path is None or r.path == path) and r.body is not None]

    def paths(self) -> list[str]:
        """Every request's path (with its query), in the order they came."""
        return [r.path for r in self.requests]

    def _next_text(self, body: dict) -> str:
        if callable(self.answers):
            return self.answers(body)
        return self.answers.pop(0) if self.answers else self.fallback

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict | None) -> None:
        authorization = handler.headers.get("Authorization")
        with self.lock:
            request = Request(handler.path, authorization, body, handler.command)
            self.requests.append(request)
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                status, answer = 401, {"error": {"message": "Incorrect API key provided",
                                                 "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}}
            elif self.script:
                status, answer = self.script.pop(0)
            elif self.respond is not None and (own := self.respond(request)) is not None:
                status, answer = own
            elif handler.command == "GET" and handler.path == "/health":
                status, answer = 200, {}
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


def main(argv: list[str] | None = None) -> None:
    """Serve on PORT until killed, as a model-server process: print --say's line, then wait
    --start-after seconds (a server loading its weights) before answering."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("--say", default="", help="a line to print at start")
    parser.add_argument("--start-after", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    if args.say:
        print(args.say, flush=True)
    time.sleep(args.start_after)
    OpenAIServer(port=args.port).thread.join()


if __name__ == "__main__":
    main()

"""Server topology: which server answers each role, and sleep/wake-up through one path."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfdisco.config import load_config
from selfdisco.llm import topology
from selfdisco.llm.server import VLLMServer
from selfdisco.llm.topology import ServerPlan, plan_servers


@pytest.mark.parametrize(("overrides", "needs_judge", "plan"), [
    ({}, False, ServerPlan("managed", "policy", "")),
    ({}, True, ServerPlan("managed", "policy", "policy")),
    ({"server": {"url": "http://10.0.0.2:8000"}}, False, ServerPlan("attached", "policy", "")),
    ({"server": {"proposer": "http://10.0.0.3:8000/v1"}}, False,
     ServerPlan("managed", "attached", "")),
    ({"models": {"proposer": "other"}}, False, ServerPlan("managed", "managed", "")),
    ({"models": {"proposer": "other"}}, True, ServerPlan("managed", "managed", "proposer")),
    ({"models": {"judge": "judge"}}, True, ServerPlan("managed", "policy", "managed")),
    ({"models": {"judge": "judge"}}, False, ServerPlan("managed", "policy", "")),
    ({"server": {"proposer": "replay:checkpoints/old"}}, True, ServerPlan("", "replay", "")),
])
def test_plan_servers(overrides, needs_judge, plan):
    assert plan_servers(load_config("smoke", overrides=overrides), needs_judge) == plan


class SleepStandIn:
    """Answers 200 to every POST and records its path (with the query)."""

    def __init__(self):
        self.paths: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                stand_in.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.root_url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stand_in():
    server = SleepStandIn()
    yield server
    server.close()


def test_asleep_sleeps_and_wakes_even_when_the_block_fails(stand_in):
    with pytest.raises(RuntimeError), topology.asleep(stand_in.root_url) as slept:
        assert slept and stand_in.paths == ["/sleep?level=1"]
        raise RuntimeError("training failed")
    assert stand_in.paths == ["/sleep?level=1", "/wake_up"]
    with topology.asleep("") as slept:
        assert slept is False
    assert len(stand_in.paths) == 2


def test_a_managed_gpu_server_sleeps_through_the_same_calls(stand_in, tmp_path):
    (tmp_path / "model").mkdir()
    server = VLLMServer(tmp_path / "model", log_path=tmp_path / "server.log",
                        port=stand_in.port, backend="cuda")  # never started
    assert topology.sleep_url(server) == stand_in.root_url
    with server.asleep(level=2) as slept:
        assert slept
    assert stand_in.paths == ["/sleep?level=2", "/wake_up"]
    cpu = VLLMServer(tmp_path / "model", log_path=tmp_path / "server.log", backend="cpu")
    assert topology.sleep_url(cpu) == ""

"""`selfdisco serve` with the smoke model: serve, record, stop, replay; nothing left behind."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import threading
import time

import psutil
import pytest
from console import SELFDISCO

from selfdisco.llm.cache import Recorder
from selfdisco.llm.client import LLMClient, LLMError
from selfdisco.llm.replay import ReplayClient

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Hello"}]


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # it ended between the two questions
        return False


class Serve:
    """A `selfdisco serve` process and the lines it prints."""

    def __init__(self, tmp_path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [SELFDISCO, "serve", "--model", "smoke-llama", "--log", str(tmp_path / "serve.log"),
             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.base_url = self._wait_for(r"serving .* at (http://\S+/v1)", timeout_s=400).group(1)
        self.descendants = psutil.Process(self.proc.pid).children(recursive=True)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def _wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                # Give up early only once the process has ended and all it printed is read.
                if self.proc.poll() is not None and not self.reader.is_alive():
                    break
                continue
            self.output.append(line)
            if match := re.search(pattern, line):
                return match
        self.proc.kill()
        pytest.fail(f"`selfdisco serve` never printed {pattern!r}:\n{''.join(self.output)}")

    def left_behind(self, timeout_s: float = 30.0) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout_s
        while True:
            alive = [p for p in self.descendants if _alive(p)]
            if not alive or time.monotonic() > deadline:
                return alive
            time.sleep(0.5)


@pytest.fixture
def start_serve(tmp_path):
    """Start `selfdisco serve`; whatever a failing test leaves running is killed afterwards."""
    started: list[Serve] = []

    def start(*args: str) -> Serve:
        started.append(Serve(tmp_path, *args))
        return started[-1]

    yield start
    for serve in started:
        if serve.proc.poll() is None:
            serve.proc.kill()  # the guard then ends the server's process group
            serve.proc.wait()
        for proc in serve.left_behind():
            proc.kill()


def test_serve_then_sigterm_then_replay_without_a_server(tmp_path, start_serve,
                                                         smoke_lora_adapter):
    serve = start_serve("--adapter", f"mine={smoke_lora_adapter}")
    assert len(serve.descendants) >= 3  # guard, API server, engine core (and more)
    client = LLMClient(serve.base_url, "smoke-llama", recorder=Recorder(tmp_path / "run" / "llm"))
    assert client.list_models() == ["smoke-llama", "mine"]
    asked = [
        lambda c: c.chat(MESSAGES, n=3, seed=5, temperature=0.2, max_tokens=8),
        lambda c: c.chat(MESSAGES, n=3, seed=5, temperature=0.2, max_tokens=8, model="mine"),
        lambda c: c.chat(MESSAGES, n=3, seed=5, temperature=0.2, max_tokens=8),  # asked again
        lambda c: c.complete("The plot", max_tokens=4, prompt_logprobs=True, logprobs=True),
    ]
    recorded = [ask(client) for ask in asked]
    assert recorded[0] != recorded[1]

    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(timeout=120) == 0
    assert serve._wait_for("stopped", timeout_s=60)
    assert not serve.left_behind(), "processes left after SIGTERM"
    with pytest.raises(LLMError):
        LLMClient(serve.base_url, "smoke-llama", retries=0).list_models()

    replay = ReplayClient(tmp_path / "run")
    assert [ask(replay) for ask in asked] == recorded


def test_serve_killed_outright_leaves_no_process(start_serve):
    serve = start_serve()
    assert len(serve.descendants) >= 3  # else "none left behind" would hold trivially
    serve.proc.kill()  # SIGKILL: only the guard can clean up
    serve.proc.wait(timeout=10)
    assert not serve.left_behind(timeout_s=60), "processes left after SIGKILL of serve"

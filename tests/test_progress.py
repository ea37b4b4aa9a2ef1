"""Progress of long steps: a line every interval in logs and pipes, one line rewritten in place
on a terminal, nothing for a step that ends quickly; a server start says what it waits for."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from selfdisco import progress as progress_module
from selfdisco.llm.backend import free_port
from selfdisco.llm.server import VLLMServer
from selfdisco.progress import DELAY_S, Progress
from selfdisco.tasks.sampling import parallel_map


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_every_interval_and_a_last_line():
    clock, stream = Clock(), io.StringIO()
    with Progress("sampling", total=64, unit="prompts", stream=stream, clock=clock) as step:
        for _ in range(64):
            clock.now += 0.5
            step.advance()
    lines = stream.getvalue().splitlines()
    assert lines == ["sampling: 20 of 64 prompts (10s)", "sampling: 40 of 64 prompts (20s)",
                     "sampling: 60 of 64 prompts (30s)", "sampling: done, 64 of 64 prompts in 32s"]


def test_an_uncounted_step_shows_elapsed_time_and_what_it_waits_for():
    clock, stream = Clock(), io.StringIO()
    step = Progress("starting vLLM for m", stream=stream, interval_s=5, clock=clock)
    for second in range(12):
        clock.now += 1
        step.update(note=f"waiting for /health; its log says: step {second}")
    step.close()
    assert stream.getvalue().splitlines() == [
        "starting vLLM for m: 5s, waiting for /health; its log says: step 4",
        "starting vLLM for m: 10s, waiting for /health; its log says: step 9",
        "starting vLLM for m: done in 12s"]


def test_a_quick_step_prints_nothing():
    clock, stream, terminal = Clock(), io.StringIO(), Terminal()
    for out in (stream, terminal):
        with Progress("scoring", total=3, stream=out, clock=clock) as step:
            clock.now += 1
            step.advance(3)
    assert stream.getvalue() == terminal.getvalue() == ""


def test_a_terminal_gets_one_line_rewritten_in_place():
    clock, terminal = Clock(), Terminal()
    with Progress("judging", total=10, stream=terminal, clock=clock) as step:
        for _ in range(10):
            clock.now += DELAY_S / 2
            step.advance()
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.endswith("judging: done, 10 of 10 in 15s\x1b[K\n")
    assert "\rjudging: 2 of 10 (3s)\x1b[K\rjudging: 3 of 10 (4s)" in text


def test_a_failed_step_does_not_say_done():
    clock, stream = Clock(), io.StringIO()
    try:
        with Progress("sampling", total=4, stream=stream, interval_s=1, clock=clock) as step:
            clock.now += 2
            step.advance()
            raise RuntimeError("server gone")
    except RuntimeError:
        pass
    assert stream.getvalue().splitlines() == ["sampling: 1 of 4 (2s)"]


def test_parallel_map_reports_each_item(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "INTERVAL_S", 0.0)
    assert parallel_map(lambda x: x * x, [1, 2, 3], concurrency=2, label="squaring") == [1, 4, 9]
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("squaring: done, 3 of 3 in") and len(lines) == 4


def test_server_start_says_what_it_waits_for(tmp_path, monkeypatch, capsys):
    """A stand-in for vLLM (tests/openai_server.py) that logs a line, then answers /health
    after about 3 s."""
    monkeypatch.setattr(progress_module, "INTERVAL_S", 0.5)

    class StandIn(VLLMServer):
        def command(self) -> list[str]:
            return [sys.executable, str(Path(__file__).parent / "openai_server.py"),
                    str(self.port), "--say", "loading the weights", "--start-after", "3"]

    (tmp_path / "model").mkdir()
    server = StandIn(tmp_path / "model", log_path=tmp_path / "server.log", port=free_port(),
                     enable_lora=False, startup_timeout_s=60)
    with server:
        pass
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("starting vLLM for model: ") for line in lines)
    assert any(line.endswith(f"waiting for {server.root_url}/health; its log says: loading the "
                             "weights") for line in lines)
    assert lines[-1].startswith("starting vLLM for model: done in")

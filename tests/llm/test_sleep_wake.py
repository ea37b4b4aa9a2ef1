"""Sleep and wake-up of a model server: one owner (topology's leases), coordinated across worker
processes, restored after a killed job, checked by a real request; development routes on
loopback only. A small HTTP server stands in for vLLM's routes (vLLM is not the part tested)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from openai_server import OpenAIServer, Reply, Request

from selfdisco.cli import main
from selfdisco.errors import UserError
from selfdisco.execution.executors import JOB_FILE, LocalExecutor
from selfdisco.llm import topology
from selfdisco.llm.server import VLLMServer

MODEL = "stand-in"


class VLLMStandIn:
    """vLLM's /sleep, /wake_up and /is_sleeping on the shared stand-in server
    (tests/openai_server.py), each call recorded (path with query).

    Completions fail (500) while asleep or when `broken`; `stuck` keeps it asleep after
    /wake_up."""

    def __init__(self):
        self.sleeping = False
        self.broken = False
        self.stuck = False
        self.server = OpenAIServer(respond=self._route)
        self.port, self.root_url = self.server.port, self.server.root_url

    def _route(self, request: Request) -> Reply | None:
        if request.path == "/is_sleeping":
            return 200, {"is_sleeping": self.sleeping}
        if request.path.startswith("/sleep"):
            self.sleeping = True
            return 200, {}
        if request.path == "/wake_up":
            self.sleeping = self.stuck
            return 200, {}
        if request.path == "/v1/completions" and (self.sleeping or self.broken):
            return 500, {"error": "engine dead"}
        return None  # a completion when awake: the server's own

    @property
    def calls(self) -> list[str]:
        return self.server.paths()

    def sleeps_and_wakes(self) -> list[str]:
        return [c for c in self.calls if c.startswith(("/sleep", "/wake_up"))]

    def close(self):
        self.server.close()


WOKEN = ["/wake_up", "/is_sleeping", "/v1/completions"]  # a wake-up, then its check


@pytest.fixture
def vllm():
    server = VLLMStandIn()
    yield server
    server.close()


def test_asleep_sleeps_and_wakes_with_a_check_even_when_the_block_fails(vllm):
    with pytest.raises(RuntimeError), topology.asleep(vllm.root_url, MODEL) as slept:
        assert slept and vllm.calls == ["/sleep?level=1"]
        raise RuntimeError("training failed")
    assert vllm.calls == ["/sleep?level=1", *WOKEN] and not vllm.sleeping
    with topology.asleep("") as slept:
        assert slept is False
    assert len(vllm.calls) == 4


def test_a_managed_gpu_server_sleeps_through_the_same_calls(vllm, tmp_path):
    (tmp_path / "model").mkdir()
    server = VLLMServer(tmp_path / "model", log_path=tmp_path / "server.log",
                        port=vllm.port, backend="cuda")  # never started
    assert topology.sleep_url(server) == vllm.root_url
    with server.asleep(level=2) as slept:
        assert slept
    assert vllm.calls == ["/sleep?level=2", *WOKEN]
    cpu = VLLMServer(tmp_path / "model", log_path=tmp_path / "server.log", backend="cpu")
    assert topology.sleep_url(cpu) == ""


# A training job in its own process: holds the server asleep until `release` exists.
HOLDER = """
import sys, time
from pathlib import Path
from selfdisco.llm import topology
url, model, entered, release = sys.argv[1:5]
with topology.asleep(url, model):
    Path(entered).write_text("training")
    while not Path(release).exists():
        time.sleep(0.05)
"""


def wait_for(check, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_overlapping_jobs_sleep_once_and_wake_after_the_last(vllm, tmp_path):
    jobs = []
    for name in ("a", "b"):
        entered, release = tmp_path / f"{name}.in", tmp_path / f"{name}.go"
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, vllm.root_url, MODEL,
                                 str(entered), str(release)])
        wait_for(entered.exists)
        jobs.append((proc, release))
    assert vllm.sleeps_and_wakes() == ["/sleep?level=1"]  # b found it asleep already
    (first, first_release), (last, last_release) = jobs
    first_release.touch()
    assert first.wait(timeout=30) == 0
    assert vllm.sleeps_and_wakes() == ["/sleep?level=1"] and vllm.sleeping  # b still trains
    last_release.touch()
    assert last.wait(timeout=30) == 0
    assert vllm.calls == ["/sleep?level=1", *WOKEN] and not vllm.sleeping


# A worker that puts the server to sleep for its training and never finishes.
HANGING_WORKER = """
import json, sys, time
from pathlib import Path
from selfdisco.llm import topology
job = json.loads(Path(sys.argv[1]).read_text())
with topology.asleep(job["sleep_url"], job["served_model"]):
    (Path(sys.argv[1]).parent / "training").write_text("")
    time.sleep(600)
"""


def test_a_worker_killed_on_timeout_leaves_the_server_awake(vllm, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(HANGING_WORKER)
    job_dir = tmp_path / "candidates" / "c0"
    job_dir.mkdir(parents=True)
    (job_dir / JOB_FILE).write_text(json.dumps({"sleep_url": vllm.root_url,
                                                "served_model": MODEL}))
    executor = LocalExecutor(1)
    executor.command = [sys.executable, str(script)]
    results = {}
    executor.map([job_dir], timeout_s=6.0, on_done=results.__setitem__)
    assert (job_dir / "training").exists()  # it was killed while training, asleep
    assert results[job_dir].cause == "timeout"
    assert vllm.calls == ["/sleep?level=1", *WOKEN] and not vllm.sleeping
    leases = topology.lease_root() / f"127.0.0.1_{vllm.port}"
    assert not list(leases.glob("leases/*")) and not (leases / topology.ASLEEP_MARK).exists()


def test_a_wake_up_whose_check_fails_is_a_clear_error(vllm):
    vllm.broken = True
    with pytest.raises(topology.WakeError, match="did not answer after waking up"), \
            topology.asleep(vllm.root_url, MODEL):
        pass
    assert vllm.calls[-1] == "/v1/completions"
    vllm.broken, vllm.stuck = False, True
    with pytest.raises(topology.WakeError, match="still says it is asleep"), \
            topology.asleep(vllm.root_url, MODEL):
        pass
    vllm.stuck = False
    with topology.asleep(vllm.root_url, MODEL):  # the failed wake-ups left no lease behind
        pass
    assert vllm.calls[-3:] == WOKEN and not vllm.sleeping


NOT_LOOPBACK = ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "2001:db8::1", "gpu-box.example"]
LOOPBACK = ["127.0.0.1", "127.0.0.2", "::1", "localhost"]


@pytest.mark.parametrize("host", NOT_LOOPBACK)
def test_development_routes_are_never_on_a_non_loopback_host(host, tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")  # even when the shell has it
    (tmp_path / "model").mkdir()
    server = VLLMServer(tmp_path / "model", log_path=tmp_path / "log", host=host,
                        backend="cuda")
    assert not server.sleep_enabled and "--enable-sleep-mode" not in server.command()
    assert "VLLM_SERVER_DEV_MODE" not in server.environment()
    with pytest.raises(UserError, match="loopback address only"):
        VLLMServer(tmp_path / "model", log_path=tmp_path / "log", host=host, backend="cuda",
                   enable_sleep_mode=True)


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_hosts_keep_sleep_mode(host, tmp_path):
    (tmp_path / "model").mkdir()
    server = VLLMServer(tmp_path / "model", log_path=tmp_path / "log", host=host,
                        backend="cuda", devices=[3], tensor_parallel_size=2)
    assert server.sleep_enabled and "--enable-sleep-mode" in server.command()
    env = server.environment()
    assert env["VLLM_SERVER_DEV_MODE"] == "1" and env["CUDA_VISIBLE_DEVICES"] == "3"
    cmd = server.command()
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"


def test_serve_on_all_interfaces_with_sleep_mode_is_a_plain_error(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    code = main(["serve", "--model", str(tmp_path / "model"), "--host", "0.0.0.0",
                 "--sleep-mode", "--log", str(tmp_path / "serve.log")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: sleep mode opens vLLM's development routes")
    assert "--host 127.0.0.1" in err and "--no-sleep-mode" in err
    assert not (tmp_path / "serve.log").exists()  # nothing started

"""Screening: the catalog passes, hostile and broken code is refused, the caller survives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from selfdisco.losses import Candidate, Fingerprint, catalog, screen, screen_text
from selfdisco.losses.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
HOSTILE = Path(__file__).resolve().parents[1] / "hostile"  # tests/hostile
ENDLESS = ("def loss(pc, pr, rc, rr, beta):\n    while True:\n        pass\n"
           "    return pc - pr\n")

SUITE = r"""
import json, sys
from pathlib import Path
from selfdisco.losses import Candidate, screen
from selfdisco.losses.sandbox import Sandbox

sandbox = Sandbox()
verdicts = []
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    result = screen(Candidate("", path.stem, path.read_text()), timeout_s=5, memory_mb=512,
                    sandbox=sandbox)
    verdicts.append({"name": path.stem, "ok": result.ok, "reason": result.reason})
sandbox.close()
print(json.dumps(verdicts))
print("ALIVE")
"""


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under root, with size and modification time for files."""
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size,
                                                               p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def expectations() -> dict[str, set[str]]:
    """Each hostile file's honest reasons, from its first line: `# expect: A | B`.

    A rejection is right when its reason contains any one of them. Most files name one; a
    resource bomb names each limit it may meet first, since which one that is depends on the
    machine's speed (a hang: the wall clock or the CPU-time limit; a slow, growing computation:
    either clock or the memory limit).
    """
    expected = {}
    for path in sorted(HOSTILE.glob("*.py")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# expect: "), path
        expected[path.stem] = set(first.removeprefix("# expect: ").split(" | "))
    return expected


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """Screen every hostile candidate in a separate process whose cwd, HOME and TMPDIR are
    fresh directories holding a canary file; return the verdicts and the before/after state."""
    root = tmp_path_factory.mktemp("hostile")
    home, tmp = root / "home", root / "tmp"
    home.mkdir()
    tmp.mkdir()
    (home / "canary.txt").write_text("untouched")
    before = snapshot(root)
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-c", SUITE, str(HOSTILE)], cwd=home, env=env,
                          capture_output=True, text=True, timeout=900)
    return {"proc": proc, "root": root, "before": before, "after": snapshot(root),
            "canary": (home / "canary.txt").read_text()}


def test_hostile_suite_is_large_enough():
    assert len(expectations()) >= 30


def test_each_hostile_candidate_names_few_and_specific_reasons():
    for name, reasons in expectations().items():
        assert 1 <= len(reasons) <= 3, (name, reasons)
        assert all(len(reason) >= 8 for reason in reasons), (name, reasons)


def test_caller_survives_the_hostile_suite(hostile_run):
    proc = hostile_run["proc"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "ALIVE"
    assert "Traceback" not in proc.stderr


def test_every_hostile_candidate_is_rejected_with_its_reason(hostile_run):
    lines = hostile_run["proc"].stdout.strip().splitlines()
    verdicts = {v["name"]: v for v in json.loads(lines[-2])}
    expected = expectations()
    assert set(verdicts) == set(expected)
    wrong = {name: (verdicts[name]["reason"], sorted(reasons))
             for name, reasons in expected.items()
             if verdicts[name]["ok"]
             or not any(reason in (verdicts[name]["reason"] or "") for reason in reasons)}
    assert wrong == {}
    for verdict in verdicts.values():
        assert "\n" not in verdict["reason"] and len(verdict["reason"]) < 500


def test_hostile_suite_writes_nothing_outside_its_temporary_directories(hostile_run):
    assert hostile_run["canary"] == "untouched"
    assert hostile_run["after"] == hostile_run["before"]  # the sandbox removed its own files
    for place in (REPO, Path.home(), hostile_run["root"]):
        assert not list(place.glob("pwned*"))


def test_every_catalog_entry_passes_screening(sandbox):
    results = {name: screen(catalog.get(name).candidate, sandbox=sandbox)
               for name in catalog.names()}
    assert {name: r.reason for name, r in results.items() if not r.ok} == {}
    fingerprints = {name: r.fingerprint for name, r in results.items()}
    duplicates = [(a, b) for a in fingerprints for b in fingerprints
                  if a < b and fingerprints[a].is_duplicate(fingerprints[b])]
    assert duplicates == []


def test_same_behaviour_in_different_code_is_a_duplicate(sandbox):
    dpo = screen(catalog.get("dpo").candidate, sandbox=sandbox).fingerprint
    rewritten = Candidate("", "rewritten", (
        "import torch.nn.functional as nnf\n"
        "def margin_softplus(self, chosen, rejected, ref_chosen, ref_rejected):\n"
        "    margin = (chosen - rejected) - (ref_chosen - ref_rejected)\n"
        "    return nnf.softplus(-self.beta * margin) + 3.0  # constant offset: same gradient\n"))
    doubled = Candidate("", "doubled", catalog.get("dpo").candidate.code.replace(
        "return -F.logsigmoid(beta * rho)", "return -2 * F.logsigmoid(beta * rho)"))
    steeper = Candidate("", "steeper", catalog.get("dpo").candidate.code.replace(
        "return -F.logsigmoid(beta * rho)", "return -F.logsigmoid(2 * beta * rho)"))
    rewritten_fp = screen(rewritten, sandbox=sandbox).fingerprint
    doubled_fp = screen(doubled, sandbox=sandbox).fingerprint  # AdamW trains 2 L like L
    steeper_fp = screen(steeper, sandbox=sandbox).fingerprint
    assert dpo.is_duplicate(rewritten_fp) and rewritten_fp.is_duplicate(dpo)
    assert dpo.is_duplicate(doubled_fp)
    assert not dpo.is_duplicate(steeper_fp)
    assert dpo.distance(steeper_fp) == pytest.approx(steeper_fp.distance(dpo))


def test_fingerprint_survives_json(sandbox):
    fingerprint = screen(catalog.get("aqfl").candidate, sandbox=sandbox).fingerprint
    again = Fingerprint.from_dict(json.loads(json.dumps(fingerprint.to_dict())))
    assert again == fingerprint
    assert again.distance(fingerprint) == 0.0


def test_screen_text_parses_then_screens(sandbox):
    answer = ("Here is my idea.\n```json\n"
              + json.dumps(catalog.get("cell").candidate.to_dict()) + "\n```")
    candidate, result = screen_text(answer, sandbox=sandbox)
    assert result.ok and candidate.name == "cell"
    candidate, result = screen_text("I have no idea.", sandbox=sandbox)
    assert candidate is None and not result.ok and "No JSON object" in result.reason


def run_in_thread(box: Sandbox, code: str, timeout_s: float) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def work() -> None:
        out["result"] = screen(Candidate("", "x", code), timeout_s=timeout_s, sandbox=box)

    thread = threading.Thread(target=work)
    thread.start()
    return thread, out


def is_server(proc: psutil.Process) -> bool:
    try:
        return proc.cmdline()[1:3] == ["-m", "selfdisco.losses.sandbox"]
    except psutil.NoSuchProcess:
        return False


def wait_for_child(box: Sandbox) -> psutil.Process:
    """The server's forked child (box.pid is bwrap's where the server runs confined)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if box.pid is not None:
            root = psutil.Process(box.pid)
            for proc in [root, *root.children(recursive=True)]:
                if is_server(proc) and is_server(proc.parent()):
                    return proc
        time.sleep(0.02)
    raise AssertionError("no screening child appeared")


def test_a_crashing_child_becomes_a_verdict(sandbox):
    sandbox.wait_ready()
    thread, out = run_in_thread(sandbox, ENDLESS, 120)
    os.kill(wait_for_child(sandbox).pid, signal.SIGSEGV)
    thread.join(120)
    assert not out["result"].ok
    assert "segmentation fault" in out["result"].reason
    assert screen(catalog.get("dpo").candidate, sandbox=sandbox).ok  # the server lives on


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_killed_server_is_replaced(sandbox):
    sandbox.wait_ready()
    old_server = sandbox.pid
    thread, out = run_in_thread(sandbox, ENDLESS, 10)  # long enough to be killed mid-way
    child = wait_for_child(sandbox)
    os.killpg(old_server, signal.SIGKILL)  # the server and its child, as an OOM killer might
    thread.join(300)
    # The same call started a new server and retried there (a verdict that came before the
    # kill would have left the dead server in place).
    assert sandbox.pid not in (None, old_server)
    reason = out["result"].reason
    assert not out["result"].ok and ("timed out" in reason or "of CPU time" in reason), reason
    assert not alive(child)
    assert screen(catalog.get("dpo").candidate, sandbox=sandbox).ok


def test_screening_keeps_torch_out_of_the_calling_process():
    code = ("import sys\nfrom selfdisco.losses import catalog, screen\n"
            "result = screen(catalog.get('dpo').candidate)\n"
            "print(result.ok, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.stdout.split() == ["True", "False"], proc.stderr[-2000:]


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("std::bad_alloc"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:118] "
                                                "DefaultCPUAllocator: can't allocate memory")])
def test_allocation_failures_read_as_out_of_memory(error):
    from selfdisco.losses.checks import describe

    assert describe(error) == "out of memory: the sandbox's memory limit was reached"
    assert describe(RuntimeError("shape mismatch")) == "RuntimeError: shape mismatch"

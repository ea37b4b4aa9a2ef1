"""`selfdisco train` from the command line: clear errors, and a smoke run that writes an adapter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PAIRS = [{"prompt": f"Review {i}:", "chosen": " lovely", "rejected": " awful"} for i in range(8)]


def selfdisco(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfdisco", "train", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS))
    return path


@pytest.mark.parametrize(("args", "message"), [
    (["--loss", "no_such_loss", "--data", "DATA"], "unknown loss 'no_such_loss'"),
    (["--loss", "dpo", "--data", "absent.jsonl"], "preference file not found"),
    (["--loss", "dpo", "--data", "BAD"], "missing column(s) rejected"),
    (["--loss", "missing.py", "--data", "DATA"], "file not found"),
    (["--loss", "dpo", "--data", "DATA", "--model", "./no-such-model"], "does not exist"),
])
def test_bad_inputs_are_clear_errors(tmp_path, pairs_file, args, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    args = [{"DATA": str(pairs_file), "BAD": str(bad)}.get(a, a) for a in args]
    result = selfdisco(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_loss_that_fails_screening_is_refused(tmp_path, pairs_file):
    loss = tmp_path / "constant.py"
    loss.write_text("def constant(policy_chosen_logps, policy_rejected_logps,\n"
                    "             reference_chosen_logps, reference_rejected_logps, beta):\n"
                    "    return policy_chosen_logps * 0.0 + 1.0\n")
    result = selfdisco("--loss", str(loss), "--data", str(pairs_file), "--preset", "smoke")
    assert result.returncode == 2
    assert "failed screening" in result.stderr and "Traceback" not in result.stderr


def test_smoke_training_writes_adapter_metrics_and_log(tmp_path, pairs_file):
    out = tmp_path / "run"
    result = selfdisco("--loss", "lrml", "--data", str(pairs_file), "--preset", "smoke",
                       "--steps", "3", "--out", str(out), "--ref-cache", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr
    assert "status: ok" in result.stdout
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps_done"] == 3
    assert len((out / "train_log.jsonl").read_text().splitlines()) >= 3
    assert list((tmp_path / "cache").glob("*.safetensors"))

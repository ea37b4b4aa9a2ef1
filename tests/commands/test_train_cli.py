"""`selfdisco train` from the command line: clear errors, and a smoke run that writes an adapter."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from selfdisco.cli import build_parser, main
from selfdisco.commands.train import train_recipe
from selfdisco.config import load_config
from selfdisco.presets import PRESETS
from selfdisco.tasks import run_train_settings, task_names

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


def _args(*flags: str):
    return build_parser().parse_args(["train", "--loss", "dpo", "--data", "pairs.jsonl", *flags])


def test_the_recipe_is_the_one_discovery_trains_with_on_the_preset():
    config, settings = train_recipe(_args("--preset", "cpu"))
    assert config.task.name == "sentiment"
    assert settings == run_train_settings(load_config("cpu"))
    # the sentiment task's cpu recipe with the cpu preset's 16 steps, not the 1e-4 / 0.05 one
    assert (settings.learning_rate, settings.beta, settings.max_steps) == (1e-3, 0.1, 16)
    assert (settings.max_length, settings.max_prompt_length) == (64, 24)
    _, mtbench = train_recipe(_args("--preset", "cpu", "--task", "mtbench"))
    on_mtbench = load_config("cpu", overrides={"task": {"name": "mtbench"}})
    assert mtbench == run_train_settings(on_mtbench)
    assert mtbench != settings


def test_flags_change_only_their_settings():
    _, base = train_recipe(_args("--preset", "cpu"))
    _, changed = train_recipe(_args("--preset", "cpu", "--learning-rate", "3e-4", "--steps", "5",
                                    "--beta", "0.2", "--seed", "7"))
    assert changed == replace(base, learning_rate=3e-4, max_steps=5, beta=0.2, seed=7)


@pytest.mark.parametrize(("flags", "message"), [
    (["--learning-rate", "0"], "--learning-rate 0.0: training setting learning_rate must be"),
    (["--learning-rate=-1e-3"], "--learning-rate -0.001"),
    (["--learning-rate", "nan"], "must be a finite number"),
    (["--learning-rate", "inf"], "must be a finite number"),
    (["--steps", "0"], "--steps 0: training setting max_steps must be at least 1"),
    (["--beta", "0"], "--beta 0.0"),
    (["--task", "digits"], "the digits task trains classification losses"),
])
def test_bad_recipe_flags_are_clear_errors(capsys, flags, message):
    assert main(["train", "--loss", "dpo", "--data", "pairs.jsonl", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_lists_the_registered_presets_and_tasks():
    result = selfdisco("--help")
    text = " ".join(result.stdout.split())
    assert "{" + ",".join(PRESETS) + "}" in text and "{" + ",".join(task_names()) + "}" in text
    assert "--learning-rate" in text

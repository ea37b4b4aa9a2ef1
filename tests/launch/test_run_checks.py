"""Every setting is checked before a run writes anything or starts a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from console import SELFDISCO

from selfdisco.config import load_config
from selfdisco.errors import UserError
from selfdisco.launch.checks import check_run
from selfdisco.tasks import run_train_settings

BAD_SETTINGS = [
    (["task.options.margn=0.5"], ["unknown task option", "margn", "known:", "margin"]),
    (["task.options.train_prompts=true"], ["train_prompts", "expected a int"]),
    (["task.options.scorer=nope"], ["unknown sentiment scorer", "vader"]),
    (["train.overrides.max_steps=\"ten\""], ["max_steps", "whole number", "'ten'",
                                           "train.overrides"]),
    (["train.overrides.lora_r=0"], ["lora_r", "at least 1"]),
    (["train.overrides.learning_rat=0.1"], ["unknown training setting", "learning_rat",
                                            "learning_rate"]),
    (["train.overrides.lora_r=32"], ["LoRA rank 32", "server.max_lora_rank = 16",
                                     "train.overrides.lora_r"]),
    (["server.max_lora_rank=4"], ["LoRA rank 8", "smoke training recipe",
                                  "server.max_lora_rank = 4"]),
    (["discovery.burn_in=[\"dpo\", \"dpp\"]"], ["discovery.burn_in", "'dpp'", "catalog"]),
    (["task.name=digits"], ["classification losses", "discovery.burn_in=", "self_improve=off"]),
]


# Runs the command line in a fresh interpreter, then names the heavy libraries it imported.
PROBE = """
import json, sys
from selfdisco.cli import main
code = main(sys.argv[1:])
heavy = {m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "trl", "peft",
                                                  "vllm", "datasets", "sklearn", "textual"}
print(json.dumps({"code": code, "heavy": sorted(heavy)}))
"""


@pytest.mark.parametrize(("sets", "words"), BAD_SETTINGS)
def test_a_bad_setting_stops_run_quickly_and_writes_nothing(tmp_path, sets, words):
    """Quickly: before torch, vLLM or any model is loaded (a clock would measure the machine)."""
    run_dir = tmp_path / "run"
    home = tmp_path / "home"
    command = [sys.executable, "-c", PROBE, "run", "--preset", "smoke", "--no-tui",
               "--run-dir", str(run_dir)]
    for text in sets:
        command += ["--set", text]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "SELFDISCO_HOME": str(home)})
    assert "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout) == {"code": 2, "heavy": []}, result.stderr
    assert result.stderr.startswith("error: ")
    for word in words:
        assert word in result.stderr
    assert not run_dir.exists()
    assert not (home / "checkpoints").exists()


def test_a_bad_setting_without_run_dir_leaves_checkpoints_empty(tmp_path):
    home = tmp_path / "home"
    result = subprocess.run([SELFDISCO, "run", "--preset", "smoke", "--no-tui", "--set",
                             "train.overrides.beta=-1"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SELFDISCO_HOME": str(home)})
    assert result.returncode == 2 and "beta must be above 0" in result.stderr
    assert not (home / "checkpoints").exists()


def test_resume_checks_settings_before_starting(tmp_path):
    from selfdisco.launch.start import prepare_run_dir

    config = load_config("smoke", overrides={"train": {"overrides": {"lora_r": 64}}})
    run_dir = prepare_run_dir(config, tmp_path / "run")
    result = subprocess.run([SELFDISCO, "resume", str(run_dir), "--no-tui"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "LoRA rank 64" in result.stderr
    assert not (run_dir / "events.jsonl").exists()


def test_check_run_returns_the_settings_with_overrides():
    config = load_config("cpu", overrides={"train": {"overrides": {"learning_rate": 1}}})
    settings = check_run(config)
    assert settings.learning_rate == 1.0 and isinstance(settings.learning_rate, float)
    assert settings.max_steps == 16  # the cpu run preset's override
    assert settings.beta == 0.1  # the sentiment task's cpu recipe


@pytest.mark.parametrize(("name", "value", "words"), [
    ("bf16", "yes", "true or false"), ("target_modules", [], "non-empty"),
    ("target_modules", "q_proj", "list of module names"), ("warmup_ratio", 1.5, "[0, 1)"),
    ("max_prompt_length", 1.5, "whole number")])
def test_training_overrides_are_type_and_range_checked(name, value, words):
    config = load_config("smoke", overrides={"train": {"overrides": {name: value}}})
    with pytest.raises(UserError, match="train.overrides") as err:
        run_train_settings(config)
    assert words in str(err.value) and name in str(err.value)


@pytest.mark.parametrize("task", ["sentiment", "mtbench", "digits"])
def test_each_task_checks_its_options(task):
    from selfdisco.tasks import get_task

    checked = get_task(task)
    checked.check_options("smoke", {})
    with pytest.raises(UserError, match="unknown task option.*known:"):
        checked.check_options("smoke", {"no_such_option": 1})


def test_mtbench_checks_its_mode_and_string_options():
    from selfdisco.tasks import get_task

    mtbench = get_task("mtbench")
    with pytest.raises(UserError, match="single"):
        mtbench.check_options("smoke", {"mode": "both"})
    with pytest.raises(UserError, match="judge_model=5: expected a str.*quote"):
        mtbench.check_options("smoke", {"judge_model": 5})
